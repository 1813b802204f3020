"""The leaderboard: rows (dataset, setup, training step, T, metric, sampler) x columns (weighting),
each cell the mean, std and n over the seeds of succeeded runs, the best cell of a row picked by
the row's own metric's direction (evaluator.higher_is_better). One rule for "best", one text per
cell (domain.format): the page, the terminal and the report show what this returns."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Literal

from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from evaluator.metrics import higher_is_better
from service.domain.format import cell_text
from service.store.leaderboard import result_rows


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
    cells: dict[str, LeaderboardCell]
    best: str | None


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
    columns: list[str]
    weightings: dict[str, str] = Field(description="column -> the weighting's name (the column is its label: name and params)")
    rows: list[LeaderboardRow]
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


def leaderboard(session: Session, *, dataset: str | None = None, metric: str | None = None, sampler: str | None = None,
                experiment_id: str | None = None, train_steps: Literal["final", "all"] = "final") -> Leaderboard:
    """train_steps="final" keeps the final checkpoints only (the paper's tables); "all" adds the
    intermediate ones (`evaluation.at_steps`, the paper's Fig. 7a). Comparable cells share the
    feature extractor and the reference set (the evaluator's contract): those are in the row key."""
    cells: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    exp_ids, hashes, versions, names = set(), set(), set(), {}
    for r in result_rows(session, dataset=dataset, metric=metric, sampler=sampler, experiment_id=experiment_id,
                         final_only=train_steps == "final"):
        key = (r.dataset, r.config_hash, r.train_step, r.num_steps, r.metric, r.sampler, r.extractor_fingerprint or "",
               r.ref_key or "")
        cells[key][r.weighting].append(r)
        exp_ids.add(r.experiment_id)
        hashes.add(r.config_hash)
        versions.add(r.code_version)
        names[r.weighting] = r.weighting_name
    rows = []
    for (ds, chash, train_step, t, row_metric, row_sampler, fp, _ref), by_w in sorted(cells.items()):
        lower = lower_is_better(row_metric)
        row_cells = {w: _cell(sorted(rs, key=lambda r: (r.seed, r.run_id))) for w, rs in by_w.items()}
        best = best_of(row_cells, lower=lower)
        if best is not None:
            row_cells[best].best = True
        rows.append(LeaderboardRow(dataset=ds, train_step=train_step, num_steps=t, metric=row_metric, sampler=row_sampler,
                                   lower_is_better=lower, config_hash=chash, extractor_fingerprint=fp or None,
                                   cells=row_cells, best=best))
    return Leaderboard(
        train_steps=train_steps, metric=metric, sampler=sampler, dataset=dataset,
        lower_is_better=lower_is_better(metric) if metric else None, columns=sorted(names), weightings=names, rows=rows,
        provenance=Provenance(experiment_ids=sorted(exp_ids), config_hashes=sorted(hashes), code_versions=sorted(versions)),
    )


def _cell(rs: list) -> LeaderboardCell:
    vals = [r.value for r in rs]
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return LeaderboardCell(mean=mean, std=std, n=len(vals), text=cell_text(mean, std, len(vals)), num_gen=rs[0].num_gen,
                           extractor=rs[0].extractor, best=False, run_ids=[r.run_id for r in rs],
                           seeds=[r.seed for r in rs], values=vals)
