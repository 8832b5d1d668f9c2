import json

import pytest
from typer.testing import CliRunner

from ragar.cli import app

runner = CliRunner()


def test_eval_preference_on_tiny(tiny_world, tmp_path):
    out = tmp_path / "rep"
    r = runner.invoke(app, ["eval", "preference", "--data", str(tiny_world), "--out", str(out), "--config", "tiny",
                            "--set", "encoder.image_size=64"])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "preference.json").read_text())
    methods = [row["method"] for row in res["rows"]]
    assert methods == ["ragar", "uniform", "recency", "reference-only"]
    assert len({row["pairs"] for row in res["rows"]}) == 1  # same pairs for every method
    assert all(0 <= row["hr@10"] <= 1 and -1 <= row["ideal_cos"] <= 1 for row in res["rows"])
    html = (out / "preference.html").read_text()
    assert html.count("data:image/png;base64,") == 2


def test_eval_preference_errors(tmp_path, tiny_world):
    r = runner.invoke(app, ["eval", "preference", "--data", str(tmp_path)])
    assert r.exit_code == 2 and "not a world" in r.output
    r = runner.invoke(app, ["eval", "preference", "--data", str(tiny_world), "--config", "tiny",
                            "--set", "eval_preference.methods=[ragar, magic]"])
    assert r.exit_code == 2 and "magic" in r.output
    r = runner.invoke(app, ["embed", "--data", str(tiny_world), "--set", "encoder.image=resnet9000"])
    assert r.exit_code == 2 and "unknown image encoder" in r.output


@pytest.mark.slow
def test_ragar_beats_uniform_and_recency_on_demo_world(tmp_path):
    out = tmp_path / "demo"
    r = runner.invoke(app, ["world", "build", "--size", "demo", "--out", str(out), "--quiet"])
    assert r.exit_code == 0
    r = runner.invoke(app, ["eval", "preference", "--data", str(out), "--config", "demo"])
    assert r.exit_code == 0, r.output
    rows = {x["method"]: x for x in json.loads((out / "report" / "preference.json").read_text())["rows"]}
    for base in ("uniform", "recency"):
        assert rows["ragar"]["ideal_cos_lo"] > rows[base]["ideal_cos"]
        assert rows["ragar"]["hr@10"] > rows[base]["hr@10"]
