"""Tables in README.md and docs/ rendered from the results JSON of the command that measured them.

A table in a markdown file is a marked block::

    <!-- results: docs/results/generation.json generation_headline -->
    | ... the table, as :data:`TABLES` renders it from that JSON ... |
    <!-- /results -->

``make results`` reruns each JSON's command and rewrites every block (``scripts/results.py``);
``tests/test_results_tables.py`` fails when a block differs from what its JSON renders, so a number
typed by hand, or left from an older run, cannot stay in the docs unnoticed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

BLOCK = re.compile(r"<!-- results: (?P<json>\S+) (?P<table>\w+) -->\n(?P<body>.*?)<!-- /results -->", re.S)


def _fmt(v, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _source(d: dict) -> str:
    p = d.get("provenance") or {}
    commit = (p.get("commit") or "?")[:7] + ("+" if p.get("dirty") else "")
    return f"*`{p.get('command', '?')}` (commit {commit}, {str(p.get('date', '?'))[:10]})*"


def generation_headline(d: dict) -> str:
    """The README's table: RAGAR against its baselines on ``ragar eval generation``."""
    rows = {r["method"]: r for r in d["rows"]}
    label = {"ragar": "ragar (retrieval-weighted history)", "uniform": "uniform history",
             "reference-only": "reference only", "ragar + best-of-4": "ragar + best-of-4",
             "reference unchanged": "the reference, unchanged"}
    out = [f"| on {d['requests']} demo-world requests, same seeds | oracle utility [95% CI] | ideal palette "
           "| parts kept | identity cos |", "|---|---|---|---|---|"]
    for key, name in label.items():
        r = rows.get(key)
        if r is None:
            continue
        u = r["utility"]
        out.append(f"| {name} | {_fmt(u['mean'])} [{_fmt(u['ci'][0])}, {_fmt(u['ci'][1])}] "
                   f"| {_fmt(r['ideal_palette']['mean'])} | {_fmt(r['parts_kept']['mean'])} "
                   f"| {_fmt(r['identity_cos']['mean'])} |")
    return "\n".join(out) + "\n\n" + _source(d) + "\n"


TABLES: dict[str, Callable[[dict], str]] = {"generation_headline": generation_headline}


def render_block(root: Path, json_path: str, table: str) -> str:
    if table not in TABLES:
        raise KeyError(f"unknown results table {table!r}; known: {sorted(TABLES)}")
    return TABLES[table](json.loads((root / json_path).read_text()))


def blocks(text: str) -> list[re.Match]:
    return list(BLOCK.finditer(text))


def rewrite(text: str, root: Path) -> str:
    """``text`` with every marked block re-rendered from its JSON."""
    return BLOCK.sub(lambda m: f"<!-- results: {m['json']} {m['table']} -->\n"
                     f"{render_block(root, m['json'], m['table'])}<!-- /results -->", text)
