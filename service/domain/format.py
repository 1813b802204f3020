"""How a number is shown, everywhere (the API's cell text, the page, the terminal, the report)."""
from __future__ import annotations

import math


def num(x: float) -> str:
    """Four significant digits, trailing zeros kept (486.7, 1265, 5.000, 0.02400)."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    return f"{x:.{max(0, 3 - math.floor(math.log10(abs(x))))}f}"


def cell_text(mean: float, std: float, n: int) -> str:
    """`mean ± std`; a single seed has no spread to show, so it reads `mean ± –`."""
    return f"{num(mean)} ± {num(std) if n > 1 else '–'}"
