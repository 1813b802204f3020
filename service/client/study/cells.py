"""The cells a study report compares, read from the leaderboard the API returns, and the fixed
verdict rule: a difference beyond two standard errors of the seed means (sqrt(s_a^2/n_a +
s_b^2/n_b)) counts as better or worse, anything inside is a tie; one seed gives no verdict."""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Cell:
    mean: float
    std: float
    n: int
    shown: str = ""  # the API's text of the cell (one formatter for every view)

    @classmethod
    def of(cls, c: dict) -> Cell:
        return cls(c["mean"], c["std"], c["n"], c["text"])

    def text(self) -> str:
        return self.shown


def compare(a: Cell | None, b: Cell | None, lower_is_better: bool = True) -> str:
    """'better' / 'worse' (a against b, beyond 2 standard errors), 'tie', or 'n/a'."""
    if a is None or b is None or a.n < 2 or b.n < 2:
        return "n/a"
    se = math.sqrt(a.std**2 / a.n + b.std**2 / b.n)
    diff = (a.mean - b.mean) * (1 if lower_is_better else -1)
    if diff < -2 * se:
        return "better"
    if diff > 2 * se:
        return "worse"
    return "tie"


SYMBOL = {"better": "**better**", "worse": "worse", "tie": "tie", "n/a": "n/a"}


def comparable_rows(lb: dict, metric: str, sampler: str | None = None, excluded: list[str] | None = None) -> list[dict]:
    """The leaderboard rows of one metric scored by one feature extractor (the one behind most
    results): cells of another extractor copy (e.g. a classifier trained twice in a race) are not
    comparable; they are left out and described in `excluded`."""
    rows = [r for r in lb["rows"] if r["metric"] == metric and (not sampler or r["sampler"] == sampler)]
    count: dict[str | None, int] = defaultdict(int)
    for r in rows:
        count[r.get("extractor_fingerprint")] += sum(c["n"] for c in r["cells"].values())
    keep = max(count, key=count.get) if count else None
    for row in rows:
        if row.get("extractor_fingerprint") != keep and excluded is not None:
            excluded += [f"{metric} of {w} at {row['train_step']} steps, T={row['num_steps']} ({c['n']} result(s), extractor "
                         f"{row.get('extractor_fingerprint')} instead of {keep})" for w, c in row["cells"].items()]
    return [r for r in rows if r.get("extractor_fingerprint") == keep]


def grid(lb: dict, metric: str, sampler: str | None = None, excluded: list[str] | None = None,
         ) -> dict[tuple[int, int], dict[str, Cell]]:
    """{(train_step, T): {weighting: Cell}} for one metric of a leaderboard (comparable rows only)."""
    out: dict[tuple[int, int], dict[str, Cell]] = defaultdict(dict)
    for row in comparable_rows(lb, metric, sampler, excluded):
        for w, c in row["cells"].items():
            out[(row["train_step"], row["num_steps"])][w] = Cell.of(c)
    return dict(out)


def label(name: str, lb: dict) -> str:
    """A study names weightings bare (`min_snr`); the leaderboard's columns are labels (`min_snr(gamma=5)`)
    and it says which weighting each is. The column meant, or the name itself if none or several are."""
    if name in lb.get("columns", ()):
        return name
    matches = [col for col, w in (lb.get("weightings") or {}).items() if w == name]
    return matches[0] if len(matches) == 1 else name


def caption(lb: dict, metric: str) -> str:
    for row in lb["rows"]:
        if row["metric"] == metric:
            c = next(iter(row["cells"].values()))
            ns = sorted({cell["n"] for r in lb["rows"] if r["metric"] == metric for cell in r["cells"].values()})
            return (f"{metric}, sampler {row['sampler']}, num_gen {c['num_gen']}, extractor {c['extractor']}, "
                    f"mean ± std over n={'/'.join(map(str, ns))} seeds")
    return metric


def wall_time(exp: dict) -> str:
    if not exp.get("finished_at"):
        return "–"
    seconds = (datetime.fromisoformat(exp["finished_at"]) - datetime.fromisoformat(exp["created_at"])).total_seconds()
    return f"{seconds / 60:.0f} min"


def study_wall_time(exps: list[dict]) -> str | None:
    """From the first experiment's submission to the last one's end; None until all have ended."""
    if not exps or not all(e.get("finished_at") for e in exps):
        return None
    return wall_time({"created_at": min((e["created_at"] for e in exps), key=datetime.fromisoformat),
                      "finished_at": max((e["finished_at"] for e in exps), key=datetime.fromisoformat)})
