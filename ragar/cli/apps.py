"""The ``ragar`` command and its groups; each module of :mod:`ragar.cli` adds its commands to them."""

from __future__ import annotations

import typer

app = typer.Typer(help="RAGAR: recommendation-guided personalized image generation.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
world_app = typer.Typer(help="The embedded synthetic world.", no_args_is_help=True)
data_app = typer.Typer(help="Dataset validation and statistics.", no_args_is_help=True)
eval_app = typer.Typer(help="Offline evaluation.", no_args_is_help=True)
train_app = typer.Typer(help="Training.", no_args_is_help=True)
ab_app = typer.Typer(help="A/B experiments: analysis and simulation.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of the service: create them (the file keeps only their hashes).",
                       no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(world_app, name="world")
app.add_typer(data_app, name="data")
app.add_typer(eval_app, name="eval")
app.add_typer(ab_app, name="ab")
app.add_typer(keys_app, name="keys")
