"""Experiment analysis: per-arm rates, lifts with 95% intervals, z-tests and the SRM check.

The unit is the exposure (one served request): its click (like) outcome is 1 when any of its
images got a click (like). Each treatment arm is compared with the control (the first arm):
absolute lift with a Wald interval and relative lift with a log-ratio interval
(``statsmodels.stats.proportion.confint_proportions_2indep``), and the two-proportion z-test's
p-value (``proportions_ztest``). The sample-ratio-mismatch check is a chi-square test of the
exposure counts against the configured shares; p < 0.001 flags a broken assignment or logging path
(the usual threshold), and then the lifts should not be trusted.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
from scipy.stats import chisquare
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from serving.experiments import Experiment

SRM_ALPHA = 0.001


def finite_or_none(x) -> float | None:
    """JSON has no NaN or infinity: an undefined number is null."""
    x = float(x)
    return None if not math.isfinite(x) else x


def outcomes(exposures: pl.DataFrame, feedback: pl.DataFrame) -> pl.DataFrame:
    """One row per exposure with ``clicked`` / ``liked`` flags."""
    ev = feedback.group_by("request_id").agg(
        (pl.col("event") == "click").any().alias("clicked"), (pl.col("event") == "like").any().alias("liked"))
    return (exposures.join(ev, on="request_id", how="left")
            .with_columns(pl.col("clicked").fill_null(False), pl.col("liked").fill_null(False)))


def _compare(ct: int, nt: int, cc: int, nc: int) -> dict:
    out: dict = {}
    if min(nt, nc) == 0:
        return out
    pt, pc = ct / nt, cc / nc
    out["lift_abs"] = pt - pc
    if 0 < ct + cc < nt + nc:  # the tests are undefined when every outcome is the same
        lo, hi = confint_proportions_2indep(ct, nt, cc, nc, method="wald", compare="diff")
        out["lift_abs_ci95"] = (finite_or_none(lo), finite_or_none(hi))
        out["p_value"] = finite_or_none(proportions_ztest([ct, cc], [nt, nc])[1])
        if cc > 0 and ct > 0:
            lo, hi = confint_proportions_2indep(ct, nt, cc, nc, method="log", compare="ratio")
            out["lift_rel"] = pt / pc - 1
            out["lift_rel_ci95"] = (finite_or_none(lo) - 1, finite_or_none(hi) - 1)
    return out


def experiment_report(exp: Experiment, exposures: pl.DataFrame, feedback: pl.DataFrame,
                      control: str | None = None) -> dict:
    """The report as a dict matching :class:`serving.schemas.ExperimentReport`."""
    control = control or exp.arms[0].name
    exp.arm(control)  # unknown control arm -> KeyError
    ex = exposures.filter(pl.col("experiment") == exp.name)
    o = outcomes(ex, feedback)
    per = {}
    for arm in exp.arms:
        a = o.filter(pl.col("arm") == arm.name)
        n = a.height
        per[arm.name] = {"arm": arm.name, "exposures": n, "users": a["user_id"].n_unique(),
                         "clicks": int(a["clicked"].sum()), "likes": int(a["liked"].sum()),
                         "click_rate": a["clicked"].mean() if n else None,
                         "like_rate": a["liked"].mean() if n else None}
    c = per[control]
    for name, row in per.items():
        if name == control:
            continue
        for what, key in (("click", "clicks"), ("like", "likes")):
            for k, v in _compare(row[key], row["exposures"], c[key], c["exposures"]).items():
                row[f"{what}_{k}"] = v
    observed = np.array([per[a.name]["exposures"] for a in exp.arms], dtype=float)
    total = int(observed.sum())
    chi2 = p = None
    if total > 0 and len(exp.arms) > 1:
        expected = np.array([a.share for a in exp.arms]) * total
        chi2, p = (finite_or_none(v) for v in chisquare(observed, expected))
    return {"experiment": exp.name, "control": control, "total_exposures": total, "arms": list(per.values()),
            "srm_chi2": chi2, "srm_p_value": p, "srm_detected": bool(p is not None and p < SRM_ALPHA)}
