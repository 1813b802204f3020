"""Names the code uses but never defines fail here, not as a 500 in front of a user: a missing
import in service/store/sweeps.py once reached CI as `NameError: keyset_page` on GET /sweeps."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["service", "trainer", "evaluator", "benchmarks", "studies", "tests"]
# undefined names (F821-F823), syntax errors (E9), invalid comparisons and statements (F63, F7)
RULES = "F821,F822,F823,E9,F63,F7"


def test_no_undefined_names_or_syntax_errors():
    paths = [p for p in PACKAGES if (ROOT / p).exists()]
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--select", RULES, *paths],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
