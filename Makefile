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

# The full experiment on embedded defaults (service/demo.py): serve, submit studies/demo.yaml (four
# weightings on digits, T in {2..100}), progress bars, the leaderboard in the terminal and a static
# copy of its page under $(SNRLAB_DATA_DIR)/demo/; the service stops at the end. About 11 min on 2 quiet cores
# (641 s in benchmarks/demo_wall.py, 2026-12-04: 2 seeds x 4 weightings x 600 steps);
# DEMO=full for 3 seeds, longer training and Inception FID.
demo: install weights
	$(PY) -m service.demo

# Speed ratios, each measured side by side in one run (never part of `make test`); writes
# docs/BENCHMARKS.md and prints the table. A subset: make bench BENCH="train sampling";
# smallest sizes (plumbing only): make bench BENCH="api leaderboard" QUICK=1. Groups: train
# sampling scoring leaderboard api first_step demo (see benchmarks/report.py).
bench: install weights
	$(PY) benchmarks/report.py $(if $(BENCH),--only "$(BENCH)") $(if $(QUICK),--quick)

clean:
	rm -rf $(VENV) .data runs *.egg-info
