"""The statistics of an A/B experiment at the user level, as experimentation platforms compute them.

The unit of randomisation is the user, so the unit of analysis is the user too: a user's exposures
are not independent draws. Each estimator here is a pure function of per-user arrays, checked in
the tests against a reference implementation (statsmodels, scipy) or the published formula.

* **Ratio metric, delta method** (Deng, Knoblich & Lu 2018): clicks per exposure is
  ``R = sum(clicks) / sum(exposures)`` over an arm's users, with
  ``Var(R) = (s_c^2 - 2 R s_cn + R^2 s_n^2) / (k * mean(n)^2)`` over its k users (the
  cluster-robust variance of the exposure-level mean, clustered by user).
* **CUPED** (Deng, Xu, Kohavi & Walker 2013): the metric's per-user linearisation
  ``L = (c - R n) / mean(n)`` is adjusted by a pre-experiment covariate X (each user's click rate in
  the logs before the experiment): ``L - theta (X - mean X)`` with ``theta = cov(L, X) / var(X)``
  pooled over the arms. The variance falls by about ``rho^2``, the squared correlation.
* **Sequential test**: the mixture SPRT with a normal mixing distribution N(0, tau^2) (Johari,
  Pekelis & Walsh 2017; the always-valid interval GrowthBook and Optimizely use). For an estimate
  with variance V, ``Lambda = sqrt(V / (V + tau^2)) exp(tau^2 d^2 / (2 V (V + tau^2)))``; the
  always-valid p-value is the running minimum of ``1 / Lambda``, and the confidence sequence is
  ``d +- sqrt(2 V (V + tau^2) / tau^2 * log(sqrt((V + tau^2) / V) / alpha))``. It may be read at any
  time, as often as one likes, without inflating the false-positive rate.
* **Planning**: users per arm for a baseline rate and a minimum detectable effect
  (statsmodels' ``NormalIndPower`` on Cohen's h), times ``1 - rho^2`` with CUPED.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import norm
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

ALPHA = 0.05


def _z(alpha: float) -> float:
    return float(norm.ppf(1 - alpha / 2))


@dataclass
class ArmStat:
    """One arm's ratio metric: value, variance of the value, users, exposures, events."""

    value: float
    var: float
    users: int
    exposures: int
    events: int


def ratio_stat(events: np.ndarray, exposures: np.ndarray) -> ArmStat:
    """Events per exposure over users (each entry one user), with the delta-method variance."""
    c, n = np.asarray(events, float), np.asarray(exposures, float)
    k = len(n)
    if k == 0 or n.sum() == 0:
        return ArmStat(float("nan"), float("nan"), k, int(n.sum()), int(c.sum()))
    r = c.sum() / n.sum()
    if k < 2:
        return ArmStat(float(r), float("nan"), k, int(n.sum()), int(c.sum()))
    lin = c - r * n  # per-user linearisation (times mean n)
    var = float(lin.var(ddof=1) / (k * n.mean() ** 2))
    return ArmStat(float(r), var, k, int(n.sum()), int(c.sum()))


def linearised(events: np.ndarray, exposures: np.ndarray, r: float) -> np.ndarray:
    """Per-user contributions whose mean's variance is the ratio's delta-method variance."""
    n = np.asarray(exposures, float)
    return (np.asarray(events, float) - r * n) / n.mean()


def cuped_theta(y: np.ndarray, x: np.ndarray) -> float:
    """The variance-minimising coefficient ``cov(y, x) / var(x)`` (0 when x does not vary)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    vx = x.var(ddof=1) if len(x) > 1 else 0.0
    if not vx > 0:
        return 0.0
    return float(np.cov(y, x, ddof=1)[0, 1] / vx)


@dataclass
class Comparison:
    """Treatment minus control on one metric: fixed-horizon and sequential, raw and CUPED."""

    diff: float
    ci95: tuple[float, float] | None
    p_value: float | None
    var: float
    cuped_diff: float | None = None
    cuped_ci95: tuple[float, float] | None = None
    cuped_p_value: float | None = None
    cuped_var: float | None = None
    variance_reduction: float | None = None  # 1 - Var(CUPED) / Var(raw)
    seq_ci95: tuple[float, float] | None = None  # the always-valid interval (on CUPED when there)
    seq_p_value: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def fixed_horizon(diff: float, var: float, alpha: float = ALPHA) -> tuple[tuple[float, float] | None, float | None]:
    """Normal interval and two-sided p-value of an estimate with variance ``var``."""
    if not (math.isfinite(diff) and math.isfinite(var) and var > 0):
        return None, None
    sd = math.sqrt(var)
    return (diff - _z(alpha) * sd, diff + _z(alpha) * sd), float(2 * norm.sf(abs(diff) / sd))


def msprt_lambda(diff: float, var: float, tau2: float) -> float:
    """The normal-mixture likelihood ratio of H1 (effect ~ N(0, tau2)) against H0 (no effect)."""
    return math.sqrt(var / (var + tau2)) * math.exp(tau2 * diff * diff / (2 * var * (var + tau2)))


def confidence_sequence(diff: float, var: float, tau2: float, alpha: float = ALPHA
                        ) -> tuple[tuple[float, float] | None, float | None]:
    """The always-valid interval at this look and ``1 / Lambda`` (this look's p bound)."""
    if not (math.isfinite(diff) and math.isfinite(var) and var > 0 and tau2 > 0):
        return None, None
    half = math.sqrt(2 * var * (var + tau2) / tau2 * math.log(math.sqrt((var + tau2) / var) / alpha))
    # log(1/Lambda) may overflow the exp for a huge effect: compute the p bound in logs
    log_lambda = 0.5 * math.log(var / (var + tau2)) + tau2 * diff * diff / (2 * var * (var + tau2))
    return (diff - half, diff + half), float(min(1.0, math.exp(-log_lambda)))


def default_tau2(mde: float) -> float:
    """The mixing variance: the effect size one plans to detect, squared (the interval is tightest
    around the sample size at which such an effect becomes detectable)."""
    return mde * mde


def compare_arms(ctrl_c: np.ndarray, ctrl_n: np.ndarray, trt_c: np.ndarray, trt_n: np.ndarray, *,
                 ctrl_x: np.ndarray | None = None, trt_x: np.ndarray | None = None, tau2: float,
                 alpha: float = ALPHA) -> Comparison | None:
    """Treatment minus control of events per exposure, users as units. With covariates (one per
    user, e.g. the pre-experiment click rate), the CUPED estimate beside the raw one; the
    sequential interval is on the CUPED estimate when there is one."""
    c, t = ratio_stat(ctrl_c, ctrl_n), ratio_stat(trt_c, trt_n)
    if min(c.users, t.users) < 2 or not (math.isfinite(c.var) and math.isfinite(t.var)):
        return None
    diff, var = t.value - c.value, t.var + c.var
    ci, p = fixed_horizon(diff, var, alpha)
    out = Comparison(diff=diff, ci95=ci, p_value=p, var=var)
    seq_diff, seq_var = diff, var
    if ctrl_x is not None and trt_x is not None:
        lc, lt = linearised(ctrl_c, ctrl_n, c.value), linearised(trt_c, trt_n, t.value)
        xc, xt = np.asarray(ctrl_x, float), np.asarray(trt_x, float)
        theta = cuped_theta(np.concatenate([lc, lt]), np.concatenate([xc, xt]))
        x_mean = np.concatenate([xc, xt]).mean()
        adj_c, adj_t = c.value - theta * (xc.mean() - x_mean), t.value - theta * (xt.mean() - x_mean)
        var_adj = (lt - theta * xt).var(ddof=1) / len(lt) + (lc - theta * xc).var(ddof=1) / len(lc)
        out.cuped_diff, out.cuped_var = float(adj_t - adj_c), float(var_adj)
        out.cuped_ci95, out.cuped_p_value = fixed_horizon(out.cuped_diff, var_adj, alpha)
        out.variance_reduction = float(1 - var_adj / var) if var > 0 else None
        seq_diff, seq_var = out.cuped_diff, var_adj
    out.seq_ci95, out.seq_p_value = confidence_sequence(seq_diff, seq_var, tau2, alpha)
    return out


def users_per_arm(baseline: float, mde: float, *, alpha: float = ALPHA, power: float = 0.8,
                  rho: float = 0.0) -> int:
    """Users per arm to detect ``baseline -> baseline + mde`` (absolute) with a two-sided test at
    ``alpha`` and ``power``, one exposure per user; with CUPED at covariate correlation ``rho``
    the variance, and so the sample, shrinks by ``1 - rho^2``."""
    if not 0 < baseline < 1 or not 0 < baseline + mde < 1 or mde == 0:
        raise ValueError(f"need 0 < baseline < 1 and 0 < baseline + mde < 1 with mde != 0 (got {baseline}, {mde})")
    if not 0 <= rho < 1:
        raise ValueError(f"rho must be in [0, 1), got {rho}")
    h = abs(proportion_effectsize(baseline + mde, baseline))
    n = NormalIndPower().solve_power(effect_size=h, alpha=alpha, power=power, ratio=1.0, alternative="two-sided")
    return math.ceil(float(n) * (1 - rho * rho))


def achieved_power(diff: float, var: float, alpha: float = ALPHA) -> float | None:
    """The power a fixed-horizon test at this variance has against an effect of ``diff``."""
    if not (math.isfinite(var) and var > 0 and math.isfinite(diff)):
        return None
    s = abs(diff) / math.sqrt(var)
    z = _z(alpha)
    return float(norm.sf(z - s) + norm.cdf(-z - s))


def users_still_needed(users_now: int, diff: float, var: float, alpha: float = ALPHA,
                       power: float = 0.8) -> int | None:
    """More users per arm for ``power`` against an effect of ``diff``, scaling the variance as 1/n."""
    if users_now <= 0 or not (math.isfinite(var) and var > 0 and diff):
        return None
    z = _z(alpha) + float(norm.ppf(power))
    need = users_now * var * z * z / (diff * diff)
    return max(0, math.ceil(need - users_now))
