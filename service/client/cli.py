"""The `snrlab` command. Each package registers its own sub-commands."""
from __future__ import annotations

import typer

app = typer.Typer(name="snrlab", help="Diffusion loss-weighting experiments on Ray.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """snrlab: train, evaluate and compare diffusion loss weightings on Ray."""


def _register() -> None:
    from evaluator import cli as evaluator_cli
    from service.client import admin, commands
    from service.client.study import commands as study
    from trainer import cli as trainer_cli

    admin.register(app)
    commands.register(app)
    study.register(app)
    trainer_cli.register(app)
    evaluator_cli.register(app)


_register()


def main() -> None:
    app()
