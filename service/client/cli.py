"""The `snrlab` command. Each package registers its own sub-commands."""
from __future__ import annotations

import typer

from evaluator import cli as evaluator_cli
from service.client import admin, commands, team
from service.client.study import commands as study
from trainer import cli as trainer_cli

app = typer.Typer(name="snrlab", help="Diffusion loss-weighting experiments on Ray.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """snrlab: train, evaluate and compare diffusion loss weightings on Ray."""


for package in (admin, commands, team, study, trainer_cli, evaluator_cli):
    package.register(app)


def main() -> None:
    app()
