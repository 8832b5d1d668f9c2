"""Every marked table in README.md and docs/ is what its results JSON renders (see eval/results_tables.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from eval.results_tables import BLOCK, blocks, json_paths, render_block, rewrite

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_readme_has_a_results_table():
    assert blocks((ROOT / "README.md").read_text()), "the README's results table must come from a JSON"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_tables_match_their_json(doc):
    for m in blocks(doc.read_text()):
        want = render_block(ROOT, m["json"], m["table"])
        assert m["body"] == want, f"{doc.name}: the {m['table']} table differs from {m['json']}: run " \
                                  "`python scripts/results.py --tables`"


def test_each_cited_json_says_how_it_was_made():
    cited = {p for doc in DOCS for m in blocks(doc.read_text()) for p in json_paths(m["json"])}
    assert any(c.startswith("benchmarks/results/") for c in cited), "the bench tables come from their JSON"
    for path in cited:
        d = json.loads((ROOT / path).read_text())
        if path.startswith("ragar/weights/"):  # released weights: the recipe's commands, not a measurement
            assert any(c.startswith("ragar train ") for c in d["trained_by"]) and d["device"], path
            continue
        if path.startswith("benchmarks/results/device-"):  # the device check: its card and CPU threads
            assert d["command"].startswith("python -m benchmarks.device_check") and d["date"] and d["card"], path
            continue
        p = d["provenance"]
        if p["command"].startswith("python -m ragar.generation.recipe"):  # a lent GPU's run: the card, not a config
            assert p["date"] and d["card"] and d["export"]["generator"], path
            continue
        if path.startswith("benchmarks/results/"):  # a bench suite: the machine instead of a config
            assert "benchmarks.run --only" in p["command"] and p["date"] and d["machine"]["cores"], path
            assert p["commit"] or "before a run recorded its commit" in p["source"], path
        else:
            assert p["command"].startswith(("ragar ", "python scripts/", "python -m benchmarks.")), path
            assert p["commit"] and p["date"] and "config" in p, path


def test_a_hand_edited_number_is_caught(tmp_path):
    doc = (ROOT / "README.md").read_text()
    m = blocks(doc)[0]
    body = m["body"]
    edited = doc.replace(body, body.replace("|", "| 9.999", 1), 1)
    assert rewrite(edited, ROOT) == doc  # rewriting restores what the JSON says
    assert blocks(edited)[0]["body"] != render_block(ROOT, m["json"], m["table"])


MEASURED = re.compile(r"\d\.\d")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_measured_table_comes_from_a_json(doc):
    """A table of measured numbers (decimals) is a results block, rendered from the JSON its command
    wrote: a number typed by hand cannot enter the docs. The last hand-kept tables (record blocks)
    were replaced by commands in `make results`."""
    text = BLOCK.sub("", doc.read_text())
    tables = re.findall(r"(?:^\|.*\|\n)+", text, re.M)
    typed = [t.splitlines()[0] for t in tables if MEASURED.search("\n".join(t.splitlines()[2:]))]
    assert not typed, f"{doc.name}: tables of measured numbers outside a results block: {typed}"


def test_make_results_knows_how_to_remake_every_cited_json():
    import importlib.util

    spec = importlib.util.spec_from_file_location("results_script", ROOT / "scripts" / "results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cited = {p for doc in DOCS for m in blocks(doc.read_text()) for p in json_paths(m["json"])}
    assert not cited - set(mod.COMMANDS) - mod.RELEASED - set(mod.LENT)
    assert set(mod.PREREQUISITES) <= set(mod.COMMANDS)
    for target, needs in mod.PREREQUISITES.items():  # what a command reads is what its prerequisite makes
        cmd = " ".join(mod.COMMANDS[target][0])
        for path, make in needs:
            assert make[make.index("--out") + 1] in path and path.split("/")[1] in cmd, (target, path)


def test_a_lent_machines_json_records_the_command_that_made_it():
    import importlib.util

    spec = importlib.util.spec_from_file_location("results_script", ROOT / "scripts" / "results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for path in mod.LENT:
        if (ROOT / path).exists():
            d = json.loads((ROOT / path).read_text())
            assert d.get("command") or (d.get("provenance") or {}).get("command"), path
