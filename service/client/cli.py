"""The `snrlab` command. Each package registers its own sub-commands."""
from __future__ import annotations

import typer

app = typer.Typer(name="snrlab", help="Diffusion loss-weighting experiments on Ray.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """snrlab: train, evaluate and compare diffusion loss weightings on Ray."""


def _register() -> None:
    from service.client import commands as service_commands

    service_commands.register(app)
    from service.client.study import report as study

    study.register(app)
    from trainer import cli as trainer_cli

    trainer_cli.register(app)
    try:
        from evaluator import cli as evaluator_cli
    except ImportError:  # evaluator not built yet
        return
    evaluator_cli.register(app)


_register()


def main() -> None:
    app()
