"""`snrlab report`: every number of the report comes from the leaderboard and the run artifacts.

The experiments here are real rows in SQL (SQLite and PostgreSQL) whose results are recorded the
way the dispatcher records them; their values are chosen so each verdict rule is exercised."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import yaml

from service.client.study.cells import Cell, compare, study_wall_time
from service.client.study.report import Report, Source
from service.client.study.schema import Study
from service.core.lifecycle import RunStatus, transition
from service.domain import experiments as domain_experiments
from service.domain.spec import ExperimentSpec
from service.runtime import paths
from service.store import runs as runs_store
from service.store.db import session_scope

BASE = {
    "datasets": [{"name": "digits"}],
    "model": {"preset": "tiny"},
    "training": {"steps": 100, "batch_size": 16, "seeds": [0, 1, 2]},
    "evaluation": {"steps": [5, 20], "samplers": ["ddpm"], "num_samples": 64, "metrics": ["fd_digits"], "at_steps": [50]},
}
STUDY = {
    "name": "mini", "title": "Mini study", "budget": "seconds",
    "experiments": {"A": "a.yaml", "C": "c.yaml"},
    "sections": [
        {"id": "A", "kind": "training_length", "title": "length", "claim": "debias wins", "experiment": "A", "metric": "fd_digits"},
        {"id": "C", "kind": "colour_shift", "title": "colour", "claim": "debias shifts less", "experiment": "C"},
        {"id": "D", "kind": "bias_analysis", "title": "bias", "claim": "debias less biased", "experiment": "A"},
        {"id": "E", "kind": "variants", "title": "variants", "claim": "clip never worse", "experiment": "A",
         "metric": "fd_digits", "weightings": ["debias_clip", "debias"]},
    ],
}


def test_bare_weighting_names_find_their_labelled_columns():
    from service.client.study.cells import label

    # the leaderboard says which weighting each column is: nothing is parsed back from a label
    names = {"constant": "constant", "min_snr(gamma=5)": "min_snr", "p2(gamma=1,k=1)": "p2", "p2(gamma=2,k=1)": "p2"}
    lb = {"columns": sorted(names), "weightings": names}
    assert label("min_snr", lb) == "min_snr(gamma=5)" and label("constant", lb) == "constant"
    assert label("p2", lb) == "p2"  # ambiguous: left as named, shown as missing rather than guessed
    assert label("min_snr(gamma=5)", lb) == "min_snr(gamma=5)"
    assert label("min_snr", {"columns": ["min_snr(gamma=5)"], "weightings": {"min_snr(gamma=5)": "debias"}}) == "min_snr"


def test_compare_needs_two_standard_errors_and_two_seeds():
    a, b = Cell(10.0, 1.0, 3), Cell(12.0, 1.0, 3)  # se = 0.816: a difference of 2 is beyond 2 se
    assert compare(a, b) == "better" and compare(b, a) == "worse"
    assert compare(a, Cell(11.0, 1.0, 3)) == "tie"
    assert compare(a, b, lower_is_better=False) == "worse"
    assert compare(Cell(10.0, 0.0, 1), b) == "n/a" and compare(a, None) == "n/a"


class ApiClient:
    """The report's client contract (`get(path, params)`, `post(path, json)`, paths under /api/v1) over TestClient."""

    def __init__(self, client, headers):
        self.client, self.headers = client, headers

    def get(self, path, params=None):
        return self.client.get("/api/v1" + path, params=params, headers=self.headers)

    def post(self, path, json=None):
        return self.client.post("/api/v1" + path, json=json, headers=self.headers)


def _record(session_factory, settings, spec: dict, values) -> str:
    """Create the experiment and finish each run with values(weighting, seed, train_step, T, metric)."""
    with session_scope(session_factory) as s:
        exp, _ = domain_experiments.create_experiment(s, spec=ExperimentSpec.model_validate(spec), code_version="test")
        for run in exp.runs:
            transition(run, RunStatus.TRAINING)
            rows = [{"train_step": step, "num_steps": t, "sampler": "ddpm", "metric": m, "value": values(run.weighting, run.seed, step, t, m),
                     "num_gen": 64, "extractor": m}
                    for step in [*spec["evaluation"].get("at_steps", []), None] for t in spec["evaluation"]["steps"]
                    for m in spec["evaluation"]["metrics"]]
            runs_store.record_results(s, run_id=run.id, results=rows)
            transition(run, RunStatus.SUCCEEDED)
            art = paths.artifacts_dir(settings.runs_dir, run.id)
            art.mkdir(parents=True, exist_ok=True)
            worse_from = 800 if run.weighting == "constant" else 950  # constant is worse than Initial from t=800
            ts = list(range(0, 1000, 50))
            (art / "analyses.json").write_text(json.dumps({
                "mse_vs_t": {"t": ts, "mse_model": [2.0 if t >= worse_from else 0.5 for t in ts], "mse_initial": [1.0] * len(ts)},
                "one_step_estimation": {"per_t": {"999": {"mse_x0": 9.0 if run.weighting == "constant" else 1.5},
                                                  "500": {"mse_x0": 0.3}}},
            }))
            (art / "one_step_estimation.png").write_bytes(b"\x89PNG fake")
        return exp.id


def _fd(weighting, seed, step, t, metric):
    # debias starts worse and overtakes constant by the final checkpoint; the clip never loses
    final = step is None
    base = {"constant": 100.0, "debias": 80.0 if final else 150.0, "debias_clip(cap=4)": 80.0 if final else 100.0}[weighting]
    return base + t + seed  # seeds 0, 1, 2: std 1


def _colour(weighting, seed, step, t, metric):
    return {"constant": 0.30, "debias": 0.31}[weighting] + 0.01 * seed


def test_report_is_built_from_the_leaderboard(client, auth, session_factory, settings, tmp_path):
    specs = {
        "A": {**BASE, "name": "mini-A", "weightings": [{"name": "constant"}, {"name": "debias"}, {"name": "debias_clip"}]},
        "C": {**BASE, "name": "mini-C", "datasets": [{"name": "colors"}], "weightings": [{"name": "constant"}, {"name": "debias"}],
              "evaluation": {**BASE["evaluation"], "at_steps": [], "metrics": ["color_mean_shift"], "steps": [2, 5]}},
    }
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(STUDY))
    for key, spec in specs.items():
        (tmp_path / STUDY["experiments"][key]).write_text(yaml.safe_dump(spec))
    exp_a = _record(session_factory, settings, specs["A"], _fd)
    _record(session_factory, settings, specs["C"], _colour)

    study, loaded = Study.load(tmp_path / "study.yaml")
    report = Report(study, loaded, Source(ApiClient(client, auth)), tmp_path / "figures", "figures")
    text = report.render()

    assert f"`{exp_a}` | succeeded | 9 |" in text
    assert re.search(r"The whole study, from its first submission to its last finished run: \d+ min\.", text)
    # A: final table cells are the API's means and stds (T=5: constant 100+5+{0,1,2})
    assert "| 5 | 106.0 ± 1.000 | **86.00 ± 1.000** | **86.00 ± 1.000** |" in text  # ties are all bold
    assert re.search(r"\| 50 \| worse \| worse \|", text) and re.search(r"\| 100 \| \*\*better\*\* \| \*\*better\*\* \|", text)
    verdicts = dict((title.split(":")[0], (v, why)) for title, v, why in report.verdicts)
    assert verdicts["A"][0] == "reproduced" and "first does so at 100 steps" in verdicts["A"][1]
    # C: debias shifts colour by 0.01 more at every T, a tie within 2 standard errors
    assert verdicts["C"][0] == "inconclusive" and "2 ties" in verdicts["C"][1]
    # D: from analyses.json, averaged over seeds
    assert verdicts["D"][0] == "reproduced" and "9.00" in verdicts["D"][1] and "1.50" in verdicts["D"][1]
    assert "| constant | 800–950 | 4/20 |" in text and "| debias | 950–950 | 1/20 |" in text
    # E: debias_clip (named bare in the study, labelled with its cap on the board) ties constant
    # at 50 steps and wins at 100; debias loses at 50
    assert verdicts["E"][0] == "goal met" and "debias_clip(cap=4)" in verdicts["E"][1] and "debias," not in verdicts["E"][1]
    assert "| debias_clip(cap=4) | 2 | 2 | 0 | 0 | yes |" in text and "| debias | 2 | 0 | 2 | 0 | no |" in text
    # the summary leads, figures exist and are linked
    assert text.index("## Summary") < text.index("## A.")
    for name in ("mini_A_vs_training.png", "mini_C_color_mean_shift.png", "mini_D_mse_vs_t.png", "mini_D_one_step_constant.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 0 and f"(figures/{name})" in text
    assert not math.isnan(float(re.search(r"\| 20 \| 121\.0 ± (\d+\.\d+)", text).group(1)))


def test_missing_experiments_are_reported_not_invented(client, auth, tmp_path):
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(STUDY))
    for key in ("A", "C"):
        spec = {**BASE, "name": f"never-{key}", "weightings": [{"name": "constant"}]}
        (tmp_path / STUDY["experiments"][key]).write_text(yaml.safe_dump(spec))
    study, loaded = Study.load(tmp_path / "study.yaml")
    text = Report(study, loaded, Source(ApiClient(client, auth)), tmp_path / "figures", "figures").render()
    assert "| A | not submitted |" in text and "The whole study" not in text
    assert text.count("**Verdict: inconclusive.** experiment") == 4


def test_study_file_errors_name_the_problem(tmp_path):
    bad = {**STUDY, "sections": [{**STUDY["sections"][0], "experiment": "Z"}]}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(bad))
    for key in ("A", "C"):
        (tmp_path / STUDY["experiments"][key]).write_text(yaml.safe_dump({**BASE, "name": key, "weightings": [{"name": "constant"}]}))
    with pytest.raises(ValueError, match="section A: unknown experiment 'Z'; the study has A, C"):
        Study.load(tmp_path / "study.yaml")


@pytest.mark.parametrize("path", sorted(Path("studies").glob("repro*.yaml")))
def test_the_reproduction_specs_are_valid(path):
    if path.name == "reproduction.yaml":
        study, specs = Study.load(path)
        assert {s.id for s in study.sections} == {"A", "B", "C", "D", "E"}
    else:
        spec = ExperimentSpec.model_validate(yaml.safe_load(path.read_text()))
        assert len(spec.training.seeds) == 3


def test_cells_of_another_extractor_copy_are_left_out_and_listed(client, auth, session_factory, settings, tmp_path):
    """Results scored by a different copy of the feature extractor are not comparable: the report
    keeps the extractor behind most results and lists what it left out."""
    spec = {**BASE, "name": "mini-A", "weightings": [{"name": "constant"}, {"name": "debias"}]}
    study = {**STUDY, "experiments": {"A": "a.yaml"}, "sections": [STUDY["sections"][0]]}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(spec))
    with session_scope(session_factory) as s:
        exp, _ = domain_experiments.create_experiment(s, spec=ExperimentSpec.model_validate(spec), code_version="test")
        for run in exp.runs:
            transition(run, RunStatus.TRAINING)
            odd = run.weighting == "constant" and run.seed == 1
            runs_store.record_results(s, run_id=run.id, results=[
                {"train_step": 50, "num_steps": t, "sampler": "ddpm", "metric": "fd_digits", "value": 1000.0 if odd else 10.0 + run.seed,
                 "extractor_fingerprint": "other" if odd else "main"} for t in (5, 20)])
            transition(run, RunStatus.SUCCEEDED)
    loaded_study, specs = Study.load(tmp_path / "study.yaml")
    report = Report(loaded_study, specs, Source(ApiClient(client, auth)), tmp_path / "figures", "figures")
    text = report.render()
    assert "fd_digits of constant at 50 steps, T=5 (1 result(s), extractor other instead of main)" in text
    assert "| 5 | **11.00 ± 1.414** | **11.00 ± 1.000** |" in text  # constant: seeds 0 and 2 only; 1000.0 never averaged in
    assert "1000" not in text


def test_study_wall_time_spans_all_experiments_and_waits_for_the_last():
    a = {"created_at": "2026-11-26T10:00:00", "finished_at": "2026-11-26T11:00:00"}
    b = {"created_at": "2026-11-26T10:01:00", "finished_at": "2026-11-26T11:30:00"}
    assert study_wall_time([a, b]) == "90 min"
    assert study_wall_time([a, {**b, "finished_at": None}]) is None and study_wall_time([]) is None
