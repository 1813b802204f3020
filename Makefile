# Two commands: `make demo` and `make test`. Everything installs from this repo's own files.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export SNRLAB_DATA_DIR ?= $(CURDIR)/.data

.PHONY: install weights browser test demo bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch==2.14.1 / torchvision==0.29.1 are pinned in pyproject.toml and install from local disk.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The Inception weights for real FID: one verified file, fetched once (see evaluator/weights.py).
weights: install
	$(PY) -m evaluator.weights fetch

# Debian's chromium for the leaderboard page's browser test (tests/service/test_browser.py).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  apt-get install -y chromium || { apt-get update && apt-get install -y chromium; } || \
	  { echo "error: could not install chromium (apt-get install -y chromium; needs root and a Debian mirror)" >&2; exit 1; }; \
	fi

test: install weights browser
	$(PY) -m pytest

# The main job on embedded defaults: a short debias run on digits with a progress bar; prints
# where the (diffusers-loadable) checkpoint is.
demo: install weights
	$(VENV)/bin/snrlab train --dataset digits --weighting debias --steps 300 --out runs/demo

bench: install weights
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) .data runs *.egg-info
