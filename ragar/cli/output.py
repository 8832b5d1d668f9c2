"""Console output shared by every ``ragar`` subcommand: tables on stdout, errors on stderr with exit 2."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def fail(msg: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def print_table(rows: list[dict], title: str | None = None) -> None:
    if not rows:
        console.print(f"{title}: (no rows)")
        return
    t = Table(title=title)
    for c in rows[0]:
        t.add_column(escape(str(c)), justify="left" if c == next(iter(rows[0])) else "right")
    for r in rows:
        t.add_row(*(f"{v:.4g}" if isinstance(v, float) else escape(str(v)) for v in r.values()))
    console.print(t)
