"""The leaderboard: rows (dataset, setup, training step, T, metric, sampler) x columns (weighting),
each cell the mean, std and n over the seeds of succeeded runs, and its verdict against a
baseline column (domain.stats: per seed the log ratio to the baseline's value, paired when the
two cells are runs of one experiment that share seeds, else Welch; Holm-corrected over each
table). The best cell of a row is picked by the row's own metric's direction
(evaluator.higher_is_better). One rule for "best", one text per cell (domain.format): the page,
the terminal and the report show what this returns.

A table is the rows of one (dataset, metric, sampler, setup, training step, extractor): its
summary gives each weighting's mean rank over the T values, the verdict counts and the caption
of the statistics. Each row carries the floor of its metric: the same metric of held-out real
images against the reference at the same N, what a perfect model would score."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Literal

from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from evaluator.metrics import higher_is_better
from service.domain import stats
from service.domain.format import cell_text
from service.store.leaderboard import ResultRow, result_rows

DEFAULT_BASELINE = "constant"
DEFAULT_MARGIN = 0.05


class Verdict(BaseModel):
    """The cell against the baseline cell of its row (domain.stats.Comparison, in %)."""

    verdict: Literal["better", "worse", "tie", "underpowered"]
    change_pct: float | None = Field(description="100 (exp(mean log ratio) - 1): the change of the geometric mean, in %")
    ci_pct: list[float | None] = Field(description="the 95% interval of change_pct (null when untested)")
    p: float | None
    p_adjusted: float | None = Field(description="Holm-adjusted over the table's comparisons: what better/worse need")
    n: int
    method: str = Field(description="paired t on log ratios | Welch (unpaired) | none (n < 2)")
    text: str


class LeaderboardCell(BaseModel):
    mean: float
    std: float
    n: int
    text: str = Field(description="`mean ± std` as every view shows it (four significant digits; one seed: `mean ± –`)")
    num_gen: int | None
    extractor: str | None
    best: bool
    run_ids: list[str]
    seeds: list[int] = Field(description="the runs' seeds, in run_ids order (runs that share a seed are paired)")
    values: list[float] = Field(description="the runs' values, in run_ids order")
    vs_baseline: Verdict | None = Field(default=None, description="against the row's baseline cell (none for the baseline)")


class LeaderboardRow(BaseModel):
    dataset: str
    train_step: int = Field(description="training step of the evaluated weights")
    num_steps: int
    metric: str
    sampler: str
    lower_is_better: bool = Field(description="the metric's direction, as the evaluator declares it")
    config_hash: str = Field(description="hash of the training setup shared by the row's cells (seed and weighting excluded)")
    extractor_fingerprint: str | None = Field(default=None, description="the feature extractor every cell of the row was "
                                              "scored with; cells scored with another are in another row")
    floor: float | None = Field(default=None, description="the metric of held-out real images against the reference at "
                                                          "the same N: what a perfect model would score")
    cells: dict[str, LeaderboardCell]
    best: str | None


class TableSummary(BaseModel):
    """The rows (T values) of one table: dataset, metric, sampler, setup, training step, extractor."""

    dataset: str
    metric: str
    sampler: str
    config_hash: str
    train_step: int
    extractor_fingerprint: str | None
    num_steps: list[int]
    baseline: str | None = Field(description="the column the verdicts compare with (absent from this table: none)")
    caption: str = Field(description="how the verdicts were reached (test, correction, margin)")
    mean_ranks: dict[str, float] = Field(description="each weighting's mean rank over the T values (1 best; only weightings "
                                                     "in every row)")
    verdict_counts: dict[str, dict[str, int]]


class Provenance(BaseModel):
    experiment_ids: list[str]
    config_hashes: list[str]
    code_versions: list[str]


class Leaderboard(BaseModel):
    train_steps: Literal["final", "all"] = "final"
    metric: str | None
    sampler: str | None
    dataset: str | None
    lower_is_better: bool | None = Field(description="the filtered metric's direction (None without a metric filter: "
                                                     "each row says its own)")
    baseline: str = Field(description="the baseline asked for: a column or a weighting's name")
    margin: float = Field(description="a tie is a 95% interval within ±margin (a fraction)")
    columns: list[str]
    weightings: dict[str, str] = Field(description="column -> the weighting's name (the column is its label: name and params)")
    rows: list[LeaderboardRow]
    tables: list[TableSummary]
    provenance: Provenance


def lower_is_better(metric: str) -> bool | None:
    """The metric's direction as the evaluator declares it; None for a name it does not know (a
    filter on such a name finds no rows)."""
    try:
        return not higher_is_better(metric)
    except ValueError:
        return None


def best_of(cells: dict[str, LeaderboardCell], *, lower: bool) -> str | None:
    """The one "best" rule: the column with the lowest (or highest) mean; ties go to the first name."""
    if not cells:
        return None
    return (min if lower else max)(sorted(cells), key=lambda w: cells[w].mean)


def resolve_baseline(baseline: str, names: dict[str, str], columns) -> str | None:
    """The column meant by `baseline`: a column itself, or the one column of a weighting of that name."""
    if baseline in columns:
        return baseline
    matches = [c for c in columns if names.get(c) == baseline]
    return matches[0] if len(matches) == 1 else None


def leaderboard(session: Session, *, dataset: str | None = None, metric: str | None = None, sampler: str | None = None,
                experiment_id: str | None = None, train_steps: Literal["final", "all"] = "final",
                baseline: str = DEFAULT_BASELINE, margin: float = DEFAULT_MARGIN) -> Leaderboard:
    """train_steps="final" keeps the final checkpoints only (the paper's tables); "all" adds the
    intermediate ones (`evaluation.at_steps`, the paper's Fig. 7a). Comparable cells share the
    feature extractor and the reference set (the evaluator's contract): those are in the row key."""
    return aggregate(result_rows(session, dataset=dataset, metric=metric, sampler=sampler, experiment_id=experiment_id,
                                 final_only=train_steps == "final"),
                     filters=dict(dataset=dataset, metric=metric, sampler=sampler), train_steps=train_steps,
                     baseline=baseline, margin=margin)


def aggregate(results, *, filters: dict, train_steps: str = "final", baseline: str = DEFAULT_BASELINE,
              margin: float = DEFAULT_MARGIN) -> Leaderboard:
    """The leaderboard of these result rows (a pure function: the fast path is checked against it)."""
    cells: dict[tuple, dict[str, list[ResultRow]]] = defaultdict(lambda: defaultdict(list))
    exp_ids, hashes, versions, names = set(), set(), set(), {}
    for r in results:
        key = (r.dataset, r.config_hash, r.train_step, r.num_steps, r.metric, r.sampler, r.extractor_fingerprint or "",
               r.ref_key or "")
        cells[key][r.weighting].append(r)
        exp_ids.add(r.experiment_id)
        hashes.add(r.config_hash)
        versions.add(r.code_version)
        names[r.weighting] = r.weighting_name
    rows, by_table = [], defaultdict(list)
    for key, by_w in sorted(cells.items()):
        ds, chash, train_step, t, row_metric, row_sampler, fp, _ref = key
        lower = lower_is_better(row_metric)
        runs = {w: sorted(rs, key=lambda r: (r.seed, r.run_id)) for w, rs in by_w.items()}
        row_cells = {w: _cell(rs) for w, rs in runs.items()}
        best = best_of(row_cells, lower=lower)
        if best is not None:
            row_cells[best].best = True
        floors = [r.floor for rs in runs.values() for r in rs if r.floor is not None]
        row = LeaderboardRow(dataset=ds, train_step=train_step, num_steps=t, metric=row_metric, sampler=row_sampler,
                             lower_is_better=lower, config_hash=chash, extractor_fingerprint=fp or None,
                             floor=sum(floors) / len(floors) if floors else None, cells=row_cells, best=best)
        rows.append(row)
        by_table[(ds, row_metric, row_sampler, chash, train_step, fp)].append((row, runs))
    tables = [_judge(key, members, baseline, margin, names) for key, members in sorted(by_table.items())]
    metric = filters.get("metric")
    return Leaderboard(
        train_steps=train_steps, **filters, lower_is_better=lower_is_better(metric) if metric else None,
        baseline=baseline, margin=margin, columns=sorted(names), weightings=names, rows=rows, tables=tables,
        provenance=Provenance(experiment_ids=sorted(exp_ids), config_hashes=sorted(hashes), code_versions=sorted(versions)),
    )


def _cell(rs: list[ResultRow]) -> LeaderboardCell:
    vals = [r.value for r in rs]
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return LeaderboardCell(mean=mean, std=std, n=len(vals), text=cell_text(mean, std, len(vals)), num_gen=rs[0].num_gen,
                           extractor=rs[0].extractor, best=False, run_ids=[r.run_id for r in rs],
                           seeds=[r.seed for r in rs], values=vals)


def _judge(key: tuple, members: list, baseline: str, margin: float, names: dict[str, str]) -> TableSummary:
    """Verdicts of one table's cells against its baseline column (Holm over the table), set on
    the cells, and the table's summary."""
    ds, metric, sampler, chash, train_step, fp = key
    lower = members[0][0].lower_is_better
    columns = {w for row, _ in members for w in row.cells}
    base = resolve_baseline(baseline, names, columns)
    raw: dict[int, dict[str, stats.Comparison]] = {}
    if base is not None:
        for i, (row, runs) in enumerate(members):
            if base not in runs:
                continue
            raw[i] = {}
            for w, rs in runs.items():
                if w == base:
                    continue
                comparison = _compare(rs, runs[base], lower=lower, margin=margin)
                if comparison is not None:
                    raw[i][w] = comparison
    judged = stats.holm(raw) if raw else {}
    for i, by_w in judged.items():
        for w, c in by_w.items():
            members[i][0].cells[w].vs_baseline = _verdict(c)
    full = [row for row, _ in members]
    shared = set.intersection(*(set(r.cells) for r in full)) if full else set()
    values = {r.num_steps: {w: r.cells[w].mean for w in shared} for r in full}
    ranks = stats.mean_ranks(values, lower_is_better=lower) if shared and all(
        math.isfinite(v) for by_w in values.values() for v in by_w.values()) else {}
    return TableSummary(dataset=ds, metric=metric, sampler=sampler, config_hash=chash, train_step=train_step,
                        extractor_fingerprint=fp or None, num_steps=sorted(r.num_steps for r in full), baseline=base,
                        caption=stats.caption(judged) if judged else "no comparisons (no baseline column in this table)"
                        if base is None else "no comparisons", mean_ranks=ranks, verdict_counts=stats.verdict_counts(judged))


def _compare(method: list[ResultRow], base: list[ResultRow], *, lower: bool, margin: float) -> stats.Comparison | None:
    """Paired by seed when both cells are runs of one experiment (seeds are common random numbers
    only there), else Welch; None for values the log ratio cannot take (zero, negative)."""
    experiments = {r.experiment_id for r in method} | {r.experiment_id for r in base}
    try:
        return stats.compare({r.seed: r.value for r in method}, {r.seed: r.value for r in base}, lower_is_better=lower,
                             margin=margin, pair_by_seed=len(experiments) == 1)
    except ValueError:
        return None


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else x


def _verdict(c: stats.Comparison) -> Verdict:
    tested = not math.isnan(c.ci_log[0])
    return Verdict(verdict=c.verdict, change_pct=_num(c.change_pct), ci_pct=[_num(x) for x in c.ci_pct] if tested else
                   [None, None], p=_num(c.p), p_adjusted=_num(c.p_adjusted), n=c.n, method=c.method, text=c.text())
