import math
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from eval.ab_report import ab_report_html
from eval.report import write_json
from serving.analysis import ExperimentData, experiment_report, outcomes, pre_period_click_rate
from serving.experiments import Arm, Experiment
from serving.schemas import ExperimentReport

EXP = Experiment(name="e", salt="s", arms=[Arm(name="control", share=0.5), Arm(name="treat", share=0.5)])


def _frames(arms: dict[str, tuple[int, int, int]]):
    """arms: name -> (exposures, clicks, likes); clicks and likes on the first exposures."""
    ex, fb = [], []
    for arm, (n, clicks, likes) in arms.items():
        for i in range(n):
            rid = f"{arm}-{i}"
            ex.append({"request_id": rid, "experiment": "e", "arm": arm, "user_id": f"{arm}-u{i}"})
            if i < clicks:
                fb.append({"request_id": rid, "event": "click"})
                fb.append({"request_id": rid, "event": "click"})  # two clicks on one exposure count once
            if i < likes:
                fb.append({"request_id": rid, "event": "like"})
    return pl.DataFrame(ex), pl.DataFrame(fb, schema={"request_id": pl.Utf8, "event": pl.Utf8})


def test_hand_computed_lift_interval_and_p_value():
    ex, fb = _frames({"control": (100, 10, 5), "treat": (100, 20, 5)})
    rep = experiment_report(EXP, ex, fb)
    t = {a["arm"]: a for a in rep["arms"]}["treat"]
    assert t["click_rate"] == pytest.approx(0.20) and t["clicks"] == 20
    assert t["click_lift_abs"] == pytest.approx(0.10)
    half = 1.959964 * math.sqrt(0.1 * 0.9 / 100 + 0.2 * 0.8 / 100)  # Wald, by hand
    assert t["click_lift_abs_ci95"] == pytest.approx((0.10 - half, 0.10 + half), abs=1e-6)
    z = 0.10 / math.sqrt(0.15 * 0.85 * (2 / 100))  # pooled two-proportion z, by hand
    p = math.erfc(z / math.sqrt(2))
    assert t["click_p_value"] == pytest.approx(p, rel=1e-6)
    assert t["click_lift_rel"] == pytest.approx(1.0)
    lo, hi = t["click_lift_rel_ci95"]
    assert lo < 1.0 < hi and lo > -0.5
    assert t["like_lift_abs"] == pytest.approx(0.0) and t["like_p_value"] == pytest.approx(1.0)
    assert rep["srm_chi2"] == pytest.approx(0.0) and not rep["srm_detected"]


def test_sample_ratio_mismatch():
    ex, fb = _frames({"control": (100, 0, 0), "treat": (150, 0, 0)})
    rep = experiment_report(EXP, ex, fb)
    assert rep["srm_chi2"] == pytest.approx(2 * 25**2 / 125)  # 10.0, p = 0.0016: not flagged at 0.001
    assert not rep["srm_detected"]
    ex, fb = _frames({"control": (100, 0, 0), "treat": (200, 0, 0)})
    assert experiment_report(EXP, ex, fb)["srm_detected"]


def test_degenerate_cases():
    ex, fb = _frames({"control": (0, 0, 0), "treat": (0, 0, 0)})
    ex = pl.DataFrame(schema={"request_id": pl.Utf8, "experiment": pl.Utf8, "arm": pl.Utf8, "user_id": pl.Utf8})
    rep = experiment_report(EXP, ex, fb)
    assert rep["total_exposures"] == 0 and rep["srm_p_value"] is None
    assert all(a["click_rate"] is None for a in rep["arms"])
    ex, fb = _frames({"control": (50, 0, 0), "treat": (50, 0, 0)})  # no clicks anywhere: no test is defined
    t = experiment_report(EXP, ex, fb)["arms"][1]
    assert t["click_lift_abs"] == 0.0 and t.get("click_p_value") is None
    with pytest.raises(KeyError):
        experiment_report(EXP, ex, fb, control="nope")


def test_outcomes_flags_each_exposure_once():
    ex, fb = _frames({"control": (3, 2, 1), "treat": (1, 0, 0)})
    o = outcomes(ex, fb)
    assert o["clicked"].sum() == 2 and o["liked"].sum() == 1 and o.height == 4


def _returning(rng, users: int, arm: str, rate_shift: float = 0.0, max_n: int = 6):
    """Users who return: each with their own click propensity and several exposures."""
    ex, fb, cov = [], [], {}
    for u in range(users):
        uid = f"{arm}-u{u}"
        p0 = rng.beta(2, 5)  # the user's own propensity; the covariate comes before any treatment
        cov[uid] = float(np.clip(p0 + rng.normal(0, 0.03), 0, 1))
        p = min(0.95, p0 + rate_shift)
        for j in range(int(rng.integers(1, max_n + 1))):
            rid = f"{uid}-{j}"
            ex.append({"request_id": rid, "experiment": "e", "arm": arm, "user_id": uid,
                       "created_at": datetime(2026, 11, 1, tzinfo=timezone.utc) + timedelta(minutes=len(ex))})
            if rng.random() < p:
                fb.append({"request_id": rid, "event": "click"})
    return ex, fb, cov


def _data(rng, n_users=400, shift=0.0, covariates=True):
    e1, f1, c1 = _returning(rng, n_users, "control")
    e2, f2, c2 = _returning(rng, n_users, "treat", shift)
    ex = pl.DataFrame(e1 + e2).sort("created_at")
    fb = pl.DataFrame(f1 + f2, schema={"request_id": pl.Utf8, "event": pl.Utf8})
    return ExperimentData(ex, fb, covariates={**c1, **c2} if covariates else None)


def test_user_level_report_with_cuped_sequential_plan_and_timeline():
    rng = np.random.default_rng(3)
    rep = experiment_report(EXP, _data(rng, n_users=600, shift=0.1))
    ExperimentReport(**rep)  # the API's typed schema accepts it
    row = next(r for r in rep["user_level"] if r["metric"] == "click")
    assert rep["unit"] == "user" and rep["cuped"] and row["variance_reduction"] > 0.2
    assert row["cuped_ci95"][0] > 0 and row["seq_ci95"][0] > 0  # a real +0.1 effect, seen both ways
    assert rep["decision"]["treat"] == "better than control"
    # returning users: the exposure-level interval is narrower than it should be
    exp_ci = rep["arms"][1]["click_lift_abs_ci95"]
    assert exp_ci[1] - exp_ci[0] < row["ci95"][1] - row["ci95"][0]
    tl = rep["timeline"]
    assert len(tl) >= 10 and tl[-1]["exposures"] == rep["total_exposures"]
    assert all(t["seq_ci95"][0] <= t["ci95"][0] and t["seq_ci95"][1] >= t["ci95"][1] for t in tl)
    p = rep["plan"]
    assert p["users_per_arm_needed"] > 0 and p["users_per_arm_now"] == 600 and p["achieved_power"] is not None
    assert p["observed_effect"] == pytest.approx(row["cuped_diff"]) and p["users_still_needed_for_observed"] == 0
    no_cov = experiment_report(EXP, _data(np.random.default_rng(3), shift=0.08, covariates=False))
    assert not no_cov["cuped"] and next(r for r in no_cov["user_level"])["cuped_diff"] is None


def test_a_null_effect_reaches_no_decision():
    rep = experiment_report(EXP, _data(np.random.default_rng(4), n_users=300))
    assert rep["decision"]["treat"] in ("no decision yet",)


@pytest.mark.parametrize("counts", [
    {"control": (40, 0, 0), "treat": (40, 0, 0)},    # no events at all
    {"control": (40, 0, 0), "treat": (40, 5, 0)},    # a zero-event arm
    {"control": (40, 40, 40), "treat": (40, 40, 40)},  # every exposure clicked and liked
    {"control": (1, 1, 0), "treat": (1, 0, 0)},      # one exposure per arm
    {"control": (0, 0, 0), "treat": (3, 1, 1)},      # an arm with nothing yet
])
def test_no_count_combination_crashes_and_the_report_renders(tmp_path, counts):
    ex, fb = _frames(counts)
    ex = ex.with_columns(pl.lit(datetime(2026, 11, 1, tzinfo=timezone.utc)).alias("created_at")) if ex.height else ex
    rep = experiment_report(EXP, ex, fb)
    ExperimentReport(**rep)
    write_json(rep, tmp_path / "r.json")
    html = ab_report_html(rep, EXP).write(tmp_path / "r.html")
    assert "<img" in html.read_text()


def test_shares_in_thirds_and_a_single_arm():
    thirds = Experiment(name="e", salt="s", arms=[Arm(name=n, share=1 / 3) for n in ("a", "b", "c")])
    ex = pl.DataFrame({"request_id": [f"r{i}" for i in range(30)], "experiment": ["e"] * 30,
                       "arm": ["a", "b", "c"] * 10, "user_id": [f"u{i}" for i in range(30)]})
    fb = pl.DataFrame(schema={"request_id": pl.Utf8, "event": pl.Utf8})
    rep = experiment_report(thirds, ex, fb)
    assert rep["srm_chi2"] == pytest.approx(0.0, abs=1e-9) and not rep["srm_detected"]
    one = Experiment(name="solo", salt="s", arms=[Arm(name="only", share=1.0)])
    with pytest.raises(ValueError, match="single arm"):
        experiment_report(one, ex, fb)


def test_guardrails_flag_an_arm_that_breaks_them():
    ex, fb = _frames({"control": (50, 5, 0), "treat": (50, 5, 0)})
    served = pl.DataFrame({"request_id": ex["request_id"],
                           "latency_s": [1.0] * 50 + [90.0] * 50,  # the treatment is slow
                           "identity": [0.8] * 50 + [0.6] * 50})  # and loses the reference
    errors = pl.DataFrame({"experiment": ["e"] * 10, "arm": ["treat"] * 10, "user_id": ["x"] * 10,
                           "status": [504] * 10, "reason": ["timeout"] * 10})
    rep = experiment_report(EXP, ExperimentData(ex, fb, errors, served))
    g = {r["arm"]: r for r in rep["guardrails"]}
    assert g["control"]["breaches"] == []
    assert g["treat"]["error_rate"] == pytest.approx(10 / 60) and g["treat"]["p95_latency_s"] == pytest.approx(90)
    assert len(g["treat"]["breaches"]) == 3 and "identity" in g["treat"]["breaches"][2]


def test_pre_period_click_rate_from_the_log():
    log = pl.DataFrame({"user_id": ["a"] * 4 + ["b"] * 2 + ["c"],
                        "event_type": ["impression"] * 3 + ["click", "impression", "impression", "click"]})
    assert pre_period_click_rate(log) == {"a": pytest.approx(1 / 3), "b": 0.0}
