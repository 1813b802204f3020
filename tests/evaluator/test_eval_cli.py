"""`snrlab eval` rows as JSON; errors are one line, exit code 2."""
from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from evaluator.cli import register
from conftest import write_checkpoint


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
    assert all({"value", "num_gen", "seconds"} <= x.keys() and x["num_gen"] == 6 for x in rows)


def test_eval_unknown_metric_exits_2(tmp_path, data_dir):
    ck = write_checkpoint(tmp_path / "ck", dataset="digits", size=8)
    r = CliRunner().invoke(_app(), ["eval", "--checkpoint", str(ck), "--metric", "is", "--actors", "0",
                                    "--data-dir", str(data_dir)])
    assert r.exit_code == 2 and "valid metrics" in r.output


def test_root_app_has_eval():
    from service.cli import app

    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    assert "eval" in names
