"""`snrlab eval` / `snrlab rescore` rows as JSON; errors are one line, exit code 2."""
from __future__ import annotations

import json

import typer
from conftest import write_checkpoint
from typer.testing import CliRunner

from evaluator.cli import register


def _app():
    app = typer.Typer()

    @app.callback()
    def root():
        pass

    register(app)
    return app


def test_eval_json_rows(tmp_path, data_dir):
    ck = write_checkpoint(tmp_path / "ck", dataset="digits", size=8)
    r = CliRunner().invoke(_app(), ["eval", "--checkpoint", str(ck), "--steps", "1,2", "--sampler", "ddpm,ddim",
                                    "--num-samples", "6", "--metric", "fd_digits,color_mean_shift", "--actors", "0",
                                    "--data-dir", str(data_dir), "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 2 * 2 * 2
    assert {(x["T"], x["sampler"], x["metric"]) for x in rows} == {
        (t, s, m) for t in (1, 2) for s in ("ddpm", "ddim") for m in ("fd_digits", "color_mean_shift")}
    assert all({"value", "floor", "num_gen", "seconds"} <= x.keys() and x["num_gen"] == 6 for x in rows)


def test_eval_out_dir_then_rescore(tmp_path, data_dir):
    ck = write_checkpoint(tmp_path / "ck", dataset="digits", size=8)
    r = CliRunner().invoke(_app(), ["eval", "--checkpoint", str(ck), "--steps", "2", "--num-samples", "6", "--metric", "fd_digits",
                                    "--actors", "0", "--data-dir", str(data_dir), "--out-dir", str(tmp_path / "out"), "--json"])
    assert r.exit_code == 0, r.output
    (row,) = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert (tmp_path / "out" / row["features"]).is_file()
    r = CliRunner().invoke(_app(), ["rescore-features", "--features", str(tmp_path / "out" / "features"), "--metric", "fd_digits,cs_digits",
                                    "--data-dir", str(data_dir), "--json"])
    assert r.exit_code == 0, r.output
    rows = {x["metric"]: x for x in (json.loads(line) for line in r.stdout.splitlines() if line.startswith("{"))}
    assert set(rows) == {"fd_digits", "cs_digits"} and rows["fd_digits"]["value"] == row["value"]
    r = CliRunner().invoke(_app(), ["rescore-features", "--features", str(tmp_path / "out" / "features"), "--metric", "fid",
                                    "--data-dir", str(data_dir)])
    assert r.exit_code == 2 and "no stored inception features" in r.output


def test_eval_defaults_come_from_eval_config(tmp_path, data_dir, monkeypatch):
    """Options left out are left out of the config: its defaults apply (num_samples 1000, ...)."""
    import evaluator.api
    from evaluator import EvalConfig

    seen = {}
    monkeypatch.setattr(evaluator.api, "evaluate", lambda checkpoint, cfg, **kw: seen.setdefault("cfg", cfg) and [])
    r = CliRunner().invoke(_app(), ["eval", "--checkpoint", str(tmp_path), "--steps", "2,5", "--metric", "fd_digits"])
    assert r.exit_code == 0, r.output
    assert seen["cfg"] == EvalConfig(steps=[2, 5], metrics=["fd_digits"])


def test_eval_unknown_metric_exits_2(tmp_path, data_dir):
    ck = write_checkpoint(tmp_path / "ck", dataset="digits", size=8)
    r = CliRunner().invoke(_app(), ["eval", "--checkpoint", str(ck), "--steps", "2", "--metric", "is", "--actors", "0",
                                    "--data-dir", str(data_dir)])
    assert r.exit_code == 2 and "valid metrics" in r.output
    assert r.output.count("\n") == 1  # one line
    r = CliRunner().invoke(_app(), ["eval", "--checkpoint", str(ck), "--steps", "2", "--metric", "fd_digits",
                                    "--sampler", "euler", "--num-samples", "1"])
    assert r.exit_code == 2 and "valid samplers: ddpm, ddim" in r.output and "num_samples" in r.output


def test_root_app_has_eval():
    from service.client.cli import app

    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    assert {"eval", "rescore-features"} <= names
