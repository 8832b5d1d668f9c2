"""Tables in README.md and docs/ rendered from the results JSON of the command that measured them.

A table in a markdown file is a marked block::

    <!-- results: docs/results/generation.json generation_headline -->
    | ... the table, as :data:`TABLES` renders it from that JSON ... |
    <!-- /results -->

A block may name several JSON files, comma-separated (a table that gathers several benchmark
suites); its renderer then gets ``{path: json}``.

``make results`` reruns each JSON's command and rewrites every block (``scripts/results.py``);
``tests/test_results_tables.py`` fails when a block differs from what its JSON renders, so a number
typed by hand, or left from an older run, cannot stay in the docs unnoticed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from eval.results_design import DESIGN_TABLES
from eval.results_gpu import GPU_TABLES
from eval.results_renderers import TABLES as _TABLES

TABLES = {**_TABLES, **GPU_TABLES, **DESIGN_TABLES}

BLOCK = re.compile(r"<!-- results: (?P<json>\S+) (?P<table>\w+) -->\n(?P<body>.*?)<!-- /results -->", re.S)


def json_paths(spec: str) -> list[str]:
    """The results JSON files a block names (one, or several comma-separated)."""
    return spec.split(",")


def render_block(root: Path, json_path: str, table: str) -> str:
    if table not in TABLES:
        raise KeyError(f"unknown results table {table!r}; known: {sorted(TABLES)}")
    data = {p: json.loads((root / p).read_text()) for p in json_paths(json_path)}
    return TABLES[table](data if len(data) > 1 else next(iter(data.values())))


def blocks(text: str) -> list[re.Match]:
    return list(BLOCK.finditer(text))


def rewrite(text: str, root: Path) -> str:
    """``text`` with every marked block re-rendered from its JSON."""
    return BLOCK.sub(lambda m: f"<!-- results: {m['json']} {m['table']} -->\n"
                     f"{render_block(root, m['json'], m['table'])}<!-- /results -->", text)
