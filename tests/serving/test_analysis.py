import math

import polars as pl
import pytest

from serving.analysis import experiment_report, outcomes
from serving.experiments import Arm, Experiment

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
