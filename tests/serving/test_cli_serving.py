"""The serving commands of the CLI: ab report, ab simulate, eval alignment, serve's config errors."""

import json

import httpx
import polars as pl
import pytest
from typer.testing import CliRunner

from ragar.cli import app
from serving.store import EventStore
from tests.serving.conftest import EXPERIMENTS_YAML, auth

runner = CliRunner()


def _fill(store: EventStore) -> None:
    for i in range(40):
        arm = "uniform" if i % 2 else "ragar"
        rid = f"req-{i:03d}"
        store.record_exposure(request_id=rid, experiment="weighting", arm=arm, user_id=f"u{i}", reference_item_id="x",
                              reference_source="catalog", method=arm, n=1, seed=i, chosen=0, fallback=None,
                              payload={"candidates": [{"preference_fit": 0.5, "identity": 0.5, "selection": 0.5}]})
        if (arm == "ragar" and i % 4 == 0) or (arm == "uniform" and i % 10 == 1):
            store.record_feedback(idempotency_key=f"key-{i:05d}", request_id=rid, image_index=0, event="click")


def test_ab_report_writes_table_json_and_html(tmp_path, experiments_file):
    db = f"sqlite:///{tmp_path / 'ev.db'}"
    store = EventStore(db)
    store.migrate()
    _fill(store)
    out = tmp_path / "ab"
    r = runner.invoke(app, ["ab", "report", "--experiment", "weighting", "--experiments", str(experiments_file),
                            "--db", db, "--out", str(out)])
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    arms = {a["arm"]: a for a in rep["arms"]}
    assert rep["control"] == "uniform"
    assert (arms["uniform"]["exposures"], arms["uniform"]["clicks"]) == (20, 4)  # i = 1, 11, 21, 31
    assert (arms["ragar"]["exposures"], arms["ragar"]["clicks"]) == (20, 10)
    assert arms["ragar"]["click_lift_abs"] == pytest.approx(0.5 - 0.2)
    lo, hi = arms["ragar"]["click_lift_abs_ci95"]
    assert lo < 0.3 < hi
    assert "ragar" in r.output and "sample ratio" in r.output
    assert "<img" in (out / "report.html").read_text()
    bad = runner.invoke(app, ["ab", "report", "--experiment", "nope", "--experiments", str(experiments_file),
                              "--db", db])
    assert bad.exit_code == 2 and "unknown experiment 'nope'" in bad.output


def test_config_errors_name_the_key_and_file(tmp_path, tiny_world):
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXPERIMENTS_YAML.replace("method: uniform", "method: uniform, bogus: 3"))
    r = runner.invoke(app, ["serve", "--data", str(tiny_world), "--experiments", str(bad)])
    assert r.exit_code == 2 and str(bad) in r.output and "bogus" in r.output
    r = runner.invoke(app, ["serve"])
    assert r.exit_code == 2 and "no dataset" in r.output
    r = runner.invoke(app, ["serve", "--data", str(tiny_world), "--max-batch-size", "0"])
    assert r.exit_code == 2 and "max_batch_size" in r.output
    r = runner.invoke(app, ["serve", "--data", str(tiny_world)])  # no key anywhere: nobody could call it
    assert r.exit_code == 2 and "no API keys" in r.output
    keys = tmp_path / "keys.yaml"
    keys.write_text("keys:\n  - {name: x, sha256: abc, scopes: [generate]}\n")
    r = runner.invoke(app, ["serve", "--data", str(tiny_world), "--api-keys", str(keys)])
    assert r.exit_code == 2 and str(keys) in r.output and "sha256" in r.output
    r = runner.invoke(app, ["serve", "--data", str(tiny_world), "--demo", "--host", "0.0.0.0"])
    assert r.exit_code == 2 and "127.0.0.1 only" in r.output


def test_alignment_from_judgments_made_over_http(live, tmp_path):
    with live() as (url, svc), httpx.Client(base_url=url, timeout=60, headers=auth("app")) as c:
        users = svc.users["user_id"].head(4).to_list()
        for k, user in enumerate(users):
            pair = c.post("/v1/compare", json={"user_id": user, "reference_item_id": svc.items["item_id"][k],
                                               "seed": k}).json()
            stored = svc.store.payloads([pair["a"]["request_id"], pair["b"]["request_id"]])  # the pair is blind
            fa, fb = (stored[pair[s]["request_id"]]["candidates"][0]["preference_fit"] for s in "ab")
            # a rater who always agrees with the ranker on fit, and always picks "a" on identity
            c.post("/v1/judgments", json={"request_a": pair["a"]["request_id"], "request_b": pair["b"]["request_id"],
                                          "preference_choice": "a" if fa >= fb else "b", "identity_choice": "a",
                                          "idempotency_key": f"judge-{k:04d}"}).raise_for_status()
        db = str(svc.store.engine.url)
        pairs = tmp_path / "pairs.csv"
        r = runner.invoke(app, ["eval", "alignment", "--db", db, "--data", str(svc.data_root), "--images-dir",
                                str(svc.images_dir), "--pairs-out", str(pairs), "--out", str(tmp_path / "al")])
    assert r.exit_code == 0, r.output
    got = json.loads((tmp_path / "al" / "alignment.json").read_text())["rows"]
    rows = {(x["metric"], x["judged_by"]): x for x in got}
    fit = rows[("preference_fit", "preference_choice")]
    assert fit["pairs"] == 4 and fit["pairwise_accuracy"] == 1.0
    assert ("oracle_utility", "preference_choice") in rows and ("identity", "identity_choice") in rows
    from eval.metrics.clpips import read_ranked_pairs

    table = read_ranked_pairs(pairs)
    assert table.height == 4 and set(table["closer"]) == {"a"}
    from pathlib import Path

    assert all(Path(p).is_file() for col in ("reference", "a", "b") for p in table[col])


def test_alignment_without_judgments_says_so(tmp_path):
    db = f"sqlite:///{tmp_path / 'ev.db'}"
    EventStore(db).migrate()
    r = runner.invoke(app, ["eval", "alignment", "--db", db])
    assert r.exit_code == 2 and "no judgments" in r.output


@pytest.mark.timeout(600)
def test_ab_simulate_runs_the_world_users_against_the_server(tiny_models, tmp_path, experiments_file):
    out = tmp_path / "sim"
    r = runner.invoke(app, ["ab", "simulate", "--experiment", "weighting", "--experiments", str(experiments_file),
                            "--users", "12", "--data", str(tiny_models["data"]), "--models",
                            str(tiny_models["generator"].parent), "--config", "tiny", "--num-inference-steps", "2",
                            "--concurrency", "4", "--out", str(out)])
    assert r.exit_code == 0, r.output + (out / "server.log").read_text()[-2000:]
    rep = json.loads((out / "report.json").read_text())
    assert rep["total_exposures"] == 12 and sum(a["exposures"] for a in rep["arms"]) == 12
    sim = pl.read_parquet(out / "simulated.parquet")
    assert sim.height == 12 and (sim["status"] == 200).all() and sim["utility"].is_finite().all()
    store = EventStore(f"sqlite:///{out / 'events.db'}")
    events = store.feedback_frame()
    assert events["request_id"].n_unique() == 12  # every simulated user reacted (click, like or skip)
    clicks = (events["event"] == "click").sum()
    assert clicks == sum(a["clicks"] for a in rep["arms"])
    assert (out / "report.html").exists() and "mean oracle utility" in r.output


@pytest.mark.timeout(600)
def test_ab_simulate_with_returning_users_reads_the_report_each_day(tiny_models, tmp_path, experiments_file,
                                                                   monkeypatch):
    out = tmp_path / "sim-days"
    args = ["ab", "simulate", "--experiment", "weighting", "--experiments", str(experiments_file),
            "--users", "10", "--days", "3", "--visit-p", "0.8", "--requests-per-visit", "2",
            "--data", str(tiny_models["data"]), "--models", str(tiny_models["generator"].parent),
            "--config", "tiny", "--num-inference-steps", "1", "--concurrency", "4", "--out", str(out)]
    monkeypatch.setattr("sys.argv", ["ragar", *args])  # what a shell would give the provenance record
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output + (out / "server.log").read_text()[-2000:]
    rep = json.loads((out / "report.json").read_text())
    sim = pl.read_parquet(out / "simulated.parquet")
    assert rep["simulation"]["days_run"] == 3 and len(rep["simulation"]["waves"]) == 3
    assert sim["user_id"].n_unique() <= 10 and sim.height > sim["user_id"].n_unique()  # users came back
    assert rep["total_exposures"] == sim.height and rep["unit"] == "user" and rep["cuped"]
    assert [w["exposures"] for w in rep["simulation"]["waves"]] == sorted(w["exposures"]
                                                                          for w in rep["simulation"]["waves"])
    html = (out / "report.html").read_text()
    assert "Decision" in html and "Guardrails" in html and "always-valid" in html
    assert (out / "timeline.png").read_bytes()[:4] == b"\x89PNG"  # the lift over the days, for the docs
    p = rep["provenance"]  # make results reruns it from here
    assert p["command"].startswith("ragar ab simulate --experiment weighting") and "--days 3" in p["command"]
    assert p["date"] and p["config"]["name"] == "tiny"


def test_ab_plan_table_and_json(tmp_path):
    r = runner.invoke(app, ["ab", "plan", "--baseline", "0.3", "--mde", "0.025", "--rho", "0.5",
                            "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "plan.json").read_text())["rows"]
    assert rows[0]["users_per_arm"] > rows[1]["users_per_arm"] == pytest.approx(rows[0]["users_per_arm"] * 0.75,
                                                                                  abs=1)
    bad = runner.invoke(app, ["ab", "plan", "--baseline", "0.99", "--mde", "0.05"])
    assert bad.exit_code == 2 and "baseline" in bad.output


def test_ab_report_with_cuped_from_the_log_and_single_arm_error(tmp_path, experiments_file, tiny_world):
    db = f"sqlite:///{tmp_path / 'ev.db'}"
    store = EventStore(db)
    store.migrate()
    _fill(store)
    users = pl.read_parquet(tiny_world / "interactions.parquet")["user_id"].unique().sort().to_list()
    with store.engine.begin() as c:  # make the exposures' users the log's users, so covariates exist
        from serving.tables import exposures

        for i in range(40):
            c.execute(exposures.update().where(exposures.c.request_id == f"req-{i:03d}")
                      .values(user_id=users[i % len(users)]))
    r = runner.invoke(app, ["ab", "report", "--experiment", "weighting", "--experiments", str(experiments_file),
                            "--db", db, "--data", str(tiny_world), "--out", str(tmp_path / "ab")])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "ab" / "report.json").read_text())
    assert rep["cuped"] and rep["user_level"][0]["variance_reduction"] is not None
    solo = tmp_path / "solo.yaml"
    solo.write_text("experiments:\n  - name: solo\n    salt: s\n    arms: [{name: only, share: 1.0}]\n")
    r = runner.invoke(app, ["ab", "report", "--experiment", "solo", "--experiments", str(solo), "--db", db,
                            "--out", str(tmp_path / "solo")])
    assert r.exit_code == 2 and "single arm" in r.output
