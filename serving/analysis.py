"""Experiment analysis: user-level metrics with CUPED and a sequential test, planning, guardrails,
and the per-exposure view beside them.

**Primary view: the user.** Users are randomised, so clicks per exposure is a ratio metric over
users (delta-method variance), CUPED-adjusted by each user's click rate in the logs before the
experiment, and read through an always-valid confidence sequence (``serving/abstats.py``) that
may be looked at any time. The decision on the primary metric (clicks) is taken on that sequence;
the report also follows it over time (``timeline``).

**Secondary view: the exposure** (as before): its click (like) outcome is 1 when any of its
images got a click (like); absolute lift with a Wald interval, relative lift with a log-ratio
interval (statsmodels ``confint_proportions_2indep``) and the two-proportion z-test. It treats
exposures as independent, which they are not when users return, so it is narrower than it should
be; it is kept for comparison.

The sample-ratio-mismatch check is a chi-square test of the exposure counts against the configured
shares; p < 0.001 flags a broken assignment or logging path (the usual threshold). Guardrails per
arm: the error rate of generation, the p95 latency, and the identity score of the served images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from scipy.stats import chisquare
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from serving import abstats
from serving.experiments import Experiment

SRM_ALPHA = 0.001
PRIMARY = "click"


def finite_or_none(x) -> float | None:
    """JSON has no NaN or infinity: an undefined number is null."""
    if x is None:
        return None
    x = float(x)
    return None if not math.isfinite(x) else x


@dataclass
class ExperimentData:
    """What the analysis reads: exposures and feedback, and optionally the generation errors
    (experiment, arm, user_id, status), what each served request cost and kept (request_id,
    latency_s, identity) and each user's pre-experiment click rate."""

    exposures: pl.DataFrame
    feedback: pl.DataFrame
    errors: pl.DataFrame | None = None
    served: pl.DataFrame | None = None
    covariates: dict[str, float] | None = field(default=None, repr=False)


def outcomes(exposures: pl.DataFrame, feedback: pl.DataFrame) -> pl.DataFrame:
    """One row per exposure with ``clicked`` / ``liked`` flags."""
    ev = feedback.group_by("request_id").agg(
        (pl.col("event") == "click").any().alias("clicked"), (pl.col("event") == "like").any().alias("liked"))
    return (exposures.join(ev, on="request_id", how="left")
            .with_columns(pl.col("clicked").fill_null(False), pl.col("liked").fill_null(False)))


def pre_period_click_rate(interactions: pl.DataFrame) -> dict[str, float]:
    """Each user's clicks per impression in the log (the experiment's CUPED covariate)."""
    if "event_type" not in interactions.columns:
        return {}
    per = (interactions.group_by("user_id")
           .agg((pl.col("event_type") == "impression").sum().alias("imp"),
                (pl.col("event_type") == "click").sum().alias("clk"))
           .filter(pl.col("imp") > 0))
    return dict(zip(per["user_id"], (per["clk"] / per["imp"]).to_list(), strict=True))


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


def _per_user(o: pl.DataFrame, covariates: dict[str, float] | None) -> pl.DataFrame:
    """One row per (arm, user): exposures, exposures clicked, liked, and the covariate (users with
    no history get the mean covariate, which adjusts nothing for them)."""
    u = o.group_by("arm", "user_id").agg(pl.len().alias("n"), pl.col("clicked").sum().alias("click"),
                                         pl.col("liked").sum().alias("like"))
    if covariates:
        fill = float(np.mean(list(covariates.values())))
        u = u.with_columns(pl.col("user_id").replace_strict(covariates, default=fill, return_dtype=pl.Float64)
                           .alias("x"))
    return u


def _user_comparison(u: pl.DataFrame, ctrl: str, arm: str, metric: str, tau2: float, cuped: bool) -> dict | None:
    c, t = u.filter(pl.col("arm") == ctrl), u.filter(pl.col("arm") == arm)
    cmp = abstats.compare_arms(c[metric].to_numpy(), c["n"].to_numpy(), t[metric].to_numpy(), t["n"].to_numpy(),
                               ctrl_x=c["x"].to_numpy() if cuped else None,
                               trt_x=t["x"].to_numpy() if cuped else None, tau2=tau2)
    if cmp is None:
        return None
    d = cmp.to_dict()
    return {k: (finite_or_none(v) if isinstance(v, float) else v) for k, v in d.items()}


def _timeline(o: pl.DataFrame, covariates, ctrl: str, arm: str, tau2: float, looks: int) -> list[dict]:
    """The primary comparison as it stood at ``looks`` points of the experiment (by exposure time)."""
    if "created_at" not in o.columns or o.height < 4:
        return []
    o = o.sort("created_at")
    out = []
    for m in sorted({max(2, round(o.height * (i + 1) / looks)) for i in range(looks)}):
        part = o.head(m)
        cmp = _user_comparison(_per_user(part, covariates), ctrl, arm, PRIMARY, tau2, bool(covariates))
        if cmp is None:
            continue
        use_cuped = cmp.get("cuped_diff") is not None
        out.append({"exposures": m, "users": part["user_id"].n_unique(), "at": str(part["created_at"][-1]),
                    "diff": cmp["cuped_diff"] if use_cuped else cmp["diff"],
                    "ci95": cmp["cuped_ci95"] if use_cuped else cmp["ci95"], "seq_ci95": cmp["seq_ci95"],
                    "seq_p_value": cmp["seq_p_value"]})
    return out


def _guardrails(exp: Experiment, errors: pl.DataFrame | None, served: pl.DataFrame | None, per: dict,
                ctrl: str) -> list[dict]:
    """Per arm: generation errors, p95 latency and identity of what was served (``served`` carries
    each exposure's arm), each against the experiment's limits."""
    g = exp.guardrails
    if errors is not None:
        errors = errors.filter(pl.col("experiment") == exp.name)
    rows = []
    for arm in exp.arms:
        n_err = errors.filter(pl.col("arm") == arm.name).height if errors is not None else 0
        n_ok = per[arm.name]["exposures"]
        row = {"arm": arm.name, "errors": n_err,
               "error_rate": n_err / (n_ok + n_err) if n_ok + n_err else None,
               "p95_latency_s": None, "identity": None}
        if served is not None:
            s = served.filter(pl.col("arm") == arm.name)
            if s.height:
                lat = s["latency_s"].drop_nulls()
                row["p95_latency_s"] = finite_or_none(lat.quantile(0.95, "linear")) if lat.len() else None
                row["identity"] = finite_or_none(s["identity"].drop_nulls().mean())
        rows.append(row)
    ref = next(r for r in rows if r["arm"] == ctrl)
    for r in rows:
        breaches = []
        if r["error_rate"] is not None and r["error_rate"] > g.max_error_rate:
            breaches.append(f"error rate {r['error_rate']:.3f} > {g.max_error_rate:g}")
        if r["p95_latency_s"] is not None and r["p95_latency_s"] > g.max_p95_latency_s:
            breaches.append(f"p95 latency {r['p95_latency_s']:.1f} s > {g.max_p95_latency_s:g} s")
        if r["identity"] is not None and ref["identity"] is not None and \
                ref["identity"] - r["identity"] > g.max_identity_drop:
            breaches.append(f"identity {r['identity']:.3f} is more than {g.max_identity_drop:g} below the "
                            f"control's {ref['identity']:.3f}")
        r["breaches"] = breaches
    return rows


def _plan(exp: Experiment, per: dict, ctrl: str, primary: dict[str, dict | None]) -> dict:
    p = exp.plan
    users_now = min(per[a.name]["users"] for a in exp.arms)
    baseline = p.baseline if p.baseline is not None else per[ctrl]["click_rate"]
    out = {"mde": p.mde, "baseline": finite_or_none(baseline), "alpha": p.alpha, "power": p.power,
           "cuped_rho": p.cuped_rho, "users_per_arm_needed": None, "users_per_arm_now": users_now,
           "progress": None, "achieved_power": None, "users_still_needed": None,
           "observed_effect": None, "users_still_needed_for_observed": None}
    if baseline is not None and 0 < baseline < 1 and 0 < baseline + p.mde < 1:
        need = abstats.users_per_arm(baseline, p.mde, alpha=p.alpha, power=p.power, rho=p.cuped_rho)
        out["users_per_arm_needed"], out["progress"] = need, users_now / need
    cmps = [c for c in primary.values() if c is not None]
    if cmps:  # the measured variance, against the planned effect
        var = max((c["cuped_var"] if c.get("cuped_var") is not None else c["var"]) for c in cmps)
        out["achieved_power"] = finite_or_none(abstats.achieved_power(p.mde, var, p.alpha))
        out["users_still_needed"] = abstats.users_still_needed(users_now, p.mde, var, p.alpha, p.power)
        first = cmps[0]
        seen = first["cuped_diff"] if first.get("cuped_diff") is not None else first["diff"]
        if seen:  # how far the data are from deciding the effect they show (fixed-horizon terms)
            out["observed_effect"] = finite_or_none(seen)
            out["users_still_needed_for_observed"] = abstats.users_still_needed(users_now, seen, var, p.alpha,
                                                                                p.power)
    return out


def _decision(primary: dict[str, dict | None], alpha: float) -> dict:
    out = {}
    for arm, c in primary.items():
        if c is None or c.get("seq_p_value") is None:
            out[arm] = "not enough data"
        elif c["seq_p_value"] < alpha:
            out[arm] = "better than control" if c["seq_ci95"][0] > 0 else "worse than control"
        else:
            out[arm] = "no decision yet"
    return out


def experiment_report(exp: Experiment, exposures: pl.DataFrame | ExperimentData, feedback: pl.DataFrame | None = None,
                      control: str | None = None, *, looks: int = 20) -> dict:
    """The report as a dict matching :class:`serving.schemas.ExperimentReport`. ``exposures`` is
    either the exposures frame (with ``feedback``) or an :class:`ExperimentData`."""
    data = exposures if isinstance(exposures, ExperimentData) else ExperimentData(exposures, feedback)
    if len(exp.arms) < 2:
        raise ValueError(f"experiment {exp.name!r} has a single arm ({exp.arms[0].name!r}): there is nothing to "
                         "compare it with")
    control = control or exp.arms[0].name
    exp.arm(control)  # unknown control arm -> KeyError
    ex = data.exposures.filter(pl.col("experiment") == exp.name)
    served = None if data.served is None else data.served.join(ex.select("request_id", "arm"), on="request_id")
    o = outcomes(ex, data.feedback)
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
    if total > 0:
        shares = np.array([a.share for a in exp.arms])
        expected = shares / shares.sum() * total  # the shares sum to 1 within 1e-6; chisquare wants exact
        chi2, p = (finite_or_none(v) for v in chisquare(observed, expected))

    tau2 = abstats.default_tau2(exp.plan.mde)
    cuped = bool(data.covariates)
    users = _per_user(o, data.covariates)
    user_rows, primary = [], {}
    for arm in exp.arms:
        if arm.name == control:
            continue
        for metric in ("click", "like"):
            cmp = _user_comparison(users, control, arm.name, metric, tau2, cuped)
            if metric == PRIMARY:
                primary[arm.name] = cmp
            t = users.filter(pl.col("arm") == arm.name)
            rate = t[metric].sum() / t["n"].sum() if t.height else None
            user_rows.append({"arm": arm.name, "metric": metric, "users": t.height,
                              "rate": finite_or_none(rate), **(cmp or {})})
    first = next(a.name for a in exp.arms if a.name != control)
    return {"experiment": exp.name, "control": control, "total_exposures": total, "arms": list(per.values()),
            "srm_chi2": chi2, "srm_p_value": p, "srm_detected": bool(p is not None and p < SRM_ALPHA),
            "unit": "user", "primary_metric": f"{PRIMARY}s per exposure", "cuped": cuped,
            "sequential_tau": math.sqrt(tau2), "user_level": user_rows,
            "decision": _decision(primary, exp.plan.alpha), "plan": _plan(exp, per, control, primary),
            "guardrails": _guardrails(exp, data.errors, served, per, control),
            "timeline": _timeline(o, data.covariates, control, first, tau2, looks)}
