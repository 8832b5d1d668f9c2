import json

import pytest
from typer.testing import CliRunner

from ragar.cli import app

runner = CliRunner()


def test_world_build_validate_stats(tmp_path):
    out = tmp_path / "w"
    r = runner.invoke(app, ["world", "build", "--size", "tiny", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "interactions" in r.output
    assert runner.invoke(app, ["data", "validate", str(out)]).exit_code == 0
    r = runner.invoke(app, ["data", "stats", str(out)])
    assert r.exit_code == 0, r.output
    stats = json.loads((out / "report" / "stats.json").read_text())
    assert stats["items"] == 48 and stats["categories"] == 8 and stats["events"]["click"] > 0
    html = (out / "report" / "stats.html").read_text()
    assert html.count("data:image/png;base64,") >= 2  # the distribution plot and the contact sheet
    assert "Contact sheet" in html


def test_bad_config_exits_2(tmp_path):
    r = runner.invoke(app, ["world", "build", "--size", "tiny", "--out", str(tmp_path), "--set", "world.x=1"])
    assert r.exit_code == 2
    assert "world.x" in r.output


@pytest.mark.timeout(900)  # one whole demo run (tiny world, the shipped generator)
def test_demo_on_tiny_reuses_world(tmp_path):
    # every step runs; 5 denoising steps instead of 25 keep the generation half at seconds (it was
    # 65 of this test's 80 s), and the setting reaching every generation step is checked below
    r = runner.invoke(app, ["demo", "--out", str(tmp_path), "--config", "tiny",
                            "--set", "generation.num_inference_steps=5"])
    assert r.exit_code == 0, r.output
    for f in ("data/stats.html", "preference/preference.json", "ranker/ranker.json", "ranker/ranker.html",
              "rankers/rankers.json", "generate/index.html", "generation/generation.json", "clpips/clpips.json",
              "replay/replay.json", "replay/replay.html"):
        assert (tmp_path / f).exists(), f
    for f in ("generation/generation.json", "replay/replay.json"):  # the --set reached the generation steps
        assert json.loads((tmp_path / f).read_text())["provenance"]["config"]["generation"]["num_inference_steps"] == 5
    # demo.candidates sizes the one generate request, demo.best_of the comparison's best-of row
    assert len(list((tmp_path / "generate").glob("candidate-*.png"))) == 2
    methods = [r["method"] for r in json.loads((tmp_path / "generation/generation.json").read_text())["rows"]]
    assert "ragar + best-of-2" in methods and "ragar" in methods
    # the wall time of each step, printed and written: which step spends make demo's 10 minutes
    timings = json.loads((tmp_path / "timings.json").read_text())
    names = [s["stage"] for s in timings["stages"]]
    assert names[0].startswith("world") and names[-1].startswith("replay (") and len(names) == 8, names
    assert all(s["seconds"] > 0 for s in timings["stages"])
    assert sum(s["seconds"] for s in timings["stages"]) <= timings["total_s"] + 0.1 * len(names)
    assert "wall time by step" in r.output and "rankers trained" in r.output
    # a second demo starts from the world step; that step alone, not the whole demo again (65 s)
    from ragar.cli.common import get_config
    from ragar.cli.world import _build_world_cached

    world = tmp_path / "world"
    stamps = {p.name: p.stat().st_mtime_ns for p in world.glob("*.parquet")}
    manifest = json.loads((world / "world.json").read_text())
    assert _build_world_cached(get_config("tiny", None, None), world) == manifest
    assert {p.name: p.stat().st_mtime_ns for p in world.glob("*.parquet")} == stamps  # reused, not rewritten
    other = get_config("tiny", ["world.n_users=41"], None)
    assert _build_world_cached(other, world)["config"]["n_users"] == 41  # another world config rebuilds
    assert {p.name: p.stat().st_mtime_ns for p in world.glob("*.parquet")} != stamps


def test_progress_bars_off_a_terminal_are_one_line_per_stage():
    """Piped, a long stage is drawn when it starts and when it ends, not every 0.1 s."""
    import subprocess
    import sys

    head = "import os, sys, time\nos.environ.pop('TQDM_MININTERVAL', None)\n"
    bars = ("from tqdm.auto import tqdm\n"
            "for _ in tqdm(range(300), desc='plain'): time.sleep(0.002)\n"
            # a live loss in the bar must not force a redraw per step (set_postfix refreshes by default)
            "bar = tqdm(range(300), desc='loss')\n"
            "for i in bar:\n    time.sleep(0.002)\n    bar.set_postfix(refresh=False, loss=f'{i}')\n"
            "bar = tqdm(range(300), desc='refresh')\n"
            "for i in bar:\n    time.sleep(0.002)\n    bar.set_postfix(loss=f'{i}')\n")

    def redraws(code: str) -> dict[str, int]:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-800:]
        return {stage: r.stderr.count(f"{stage}:") for stage in ("plain", "loss", "refresh")}

    assert all(n > 2 for n in redraws(head + bars).values())  # tqdm's own default: a redraw every 0.1 s
    piped = redraws(head + "import ragar.cli\n" + bars)  # as the `ragar` entry point runs
    assert piped["plain"] == piped["loss"] == 2  # start, end
    assert piped["refresh"] > 2


def test_no_progress_bar_in_the_package_redraws_on_every_postfix():
    """The rule the test above measures, checked where bars are made."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    offenders = [f"{p.relative_to(root)}:{i}" for pkg in ("ragar", "recsys", "eval", "serving")
                 for p in (root / pkg).rglob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1)
                 if "set_postfix(" in line and "refresh=False" not in line]
    assert not offenders, offenders
