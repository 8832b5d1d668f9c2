import json

from typer.testing import CliRunner

from ragar.cli import app

runner = CliRunner()
FAST = ["--config", "tiny"]


def test_train_and_eval_ranker(tiny_world, tmp_path):
    out = tmp_path / "rk"
    r = runner.invoke(app, ["train", "ranker", "--data", str(tiny_world), "--out", str(out), *FAST])
    assert r.exit_code == 0, r.output
    assert (out / "rankers.json").exists() and (out / "din-ragar" / "config.json").exists()
    rep = tmp_path / "rep"
    r = runner.invoke(app, ["eval", "ranker", "--data", str(tiny_world), "--rankers", str(out), "--out", str(rep),
                            *FAST])
    assert r.exit_code == 0, r.output
    res = json.loads((rep / "ranker.json").read_text())
    assert {row["model"] for row in res["rows"]} >= {"popularity", "cosine", "lightgbm", "din", "lightgbm-uniform",
                                                     "din-uniform"}
    assert set(res["oracle_spearman"]) == {"ragar", "uniform"}
    assert -1 <= res["oracle_spearman"]["ragar"] <= 1
    assert "data:image/png;base64," in (rep / "ranker.html").read_text()
    # other preference settings in the config: the features are still built as the rankers were trained
    rep2 = tmp_path / "rep2"
    r = runner.invoke(app, ["eval", "ranker", "--data", str(tiny_world), "--rankers", str(out), "--out", str(rep2),
                            *FAST, "--set", "preference.temperature=0.5"])
    assert r.exit_code == 0, r.output
    assert "were trained with preference settings" in r.output
    assert json.loads((rep2 / "ranker.json").read_text())["rows"] == res["rows"]


def test_eval_ranker_errors(tiny_world, tmp_path):
    r = runner.invoke(app, ["eval", "ranker", "--data", str(tiny_world), "--rankers", str(tmp_path)])
    assert r.exit_code == 2 and "no rankers" in r.output
    r = runner.invoke(app, ["train", "ranker", "--data", str(tmp_path), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "not a dataset" in r.output
