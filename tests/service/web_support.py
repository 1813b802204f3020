"""A finished experiment for the page tests, made through the service's own code paths:
domain_experiments.create_experiment, then the Dispatcher driving a fake executor to success (no Ray)."""
from __future__ import annotations

from html.parser import HTMLParser

from service.domain import experiments as domain_experiments
from service.domain.spec import ExperimentSpec
from service.runtime.dispatcher import Dispatcher
from service.runtime.paths import artifacts_dir
from service.store.db import session_scope
from service.web import plots

WEIGHTINGS = ["constant", "debias", "min_snr"]
STEPS = [2, 5, 10]


def finished_experiment(session_factory, settings, executor, make_spec, *, fail_one: bool = False) -> dict:
    """Two seeds x three weightings on digits; fd_digits per T differs by weighting and seed.
    With fail_one, a second experiment whose only run fails with a readable error."""
    spec = make_spec(weightings=[{"name": w} for w in WEIGHTINGS],
                     training={"steps": 100, "batch_size": 16, "seeds": [0, 1], "num_timesteps": 1000},
                     evaluation={"steps": STEPS, "samplers": ["ddpm"], "num_samples": 64,
                                 "metrics": ["fd_digits", "color_mean_shift"]})
    with session_scope(session_factory) as s:
        exp, _ = domain_experiments.create_experiment(s, spec=ExperimentSpec.model_validate(spec), code_version="test")
        exp_id, runs = exp.id, [(r.id, r.weighting, r.seed) for r in exp.runs]
    d = Dispatcher(session_factory=session_factory, settings=settings.model_copy(update={"max_attempts": 1}), executor=executor)
    d.tick()
    png = plots.loss_by_quartile({"x": []})
    for i, (rid, w, seed) in enumerate(runs):
        executor.write_metrics(rid, [10, 50, 100], mse_q0=0.5 + i / 10, mse_q1=0.2, mse_q2=0.1, mse_q3=0.05)
        job = executor.job_for(rid)
        job.phase = "succeeded"
        job.extra = {"usage": {"device": "cpu", "num_workers": 1, "wall_s": 30.0 + i, "device_hours": (30.0 + i) / 3600,
                               "device_hours_unit": "cpu-worker-hours"}}
        base = 10.0 * (WEIGHTINGS.index(w.split("(")[0]) + 1) + 1.7 * seed
        job.results = [
            {"num_steps": t, "sampler": "ddpm", "metric": m, "value": (base + 100 / t) * (0.01 if m != "fd_digits" else 1),
             "num_gen": 64, "extractor": "fd_digits" if m == "fd_digits" else "color"}
            for t in STEPS for m in ("fd_digits", "color_mean_shift")
        ]
        art = artifacts_dir(settings.runs_dir, rid)
        art.mkdir(parents=True, exist_ok=True)
        (art / "samples_by_T.png").write_bytes(png)
    d.tick()
    failed_id = None
    if fail_one:
        with session_scope(session_factory) as s:
            exp2, _ = domain_experiments.create_experiment(s, spec=ExperimentSpec.model_validate(make_spec(name="broken", weightings=[{"name": "p2"}])),
                                             code_version="test")
            failed_id, fail_run = exp2.id, exp2.runs[0].id
        d.tick()
        job = executor.job_for(fail_run)
        job.phase, job.error = "failed", "ValueError: loss is NaN at step 40"
        d.tick()
    return {"experiment_id": exp_id, "run_ids": [r[0] for r in runs], "failed_experiment_id": failed_id}


class _Inline(HTMLParser):
    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        self._script = False

    def handle_starttag(self, tag, attrs):
        names = dict(attrs)
        self.found += [f"{tag} {k}=" for k in names if k == "style" or k.startswith("on")]
        self.found += [f"{tag} {k}=javascript:" for k, v in attrs if (v or "").strip().lower().startswith("javascript:")]
        self._script = tag == "script" and "src" not in names
        if tag == "style":
            self.found.append("<style>")

    def handle_data(self, data):
        if self._script and data.strip():
            self.found.append("inline <script>")

    def handle_endtag(self, tag):
        self._script = False


def inline_code(html: str) -> list[str]:
    """What in a page a CSP without 'unsafe-inline' would block: style and on* attributes,
    javascript: URLs, <script> without src, <style> elements."""
    parser = _Inline()
    parser.feed(html)
    return parser.found
