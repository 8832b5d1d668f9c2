"""Each statistic against a reference implementation on random inputs: statsmodels' cluster-robust
OLS for the delta method, OLS for CUPED's coefficient, the mixture SPRT's own likelihood ratio for
the confidence sequence, statsmodels' power solver and the arcsine formula for planning; and the
A/A check that the sequential test keeps its error rate under continuous peeking."""

import math

import numpy as np
import pytest
import statsmodels.api as sm
from scipy.stats import norm

from serving.abstats import (
    achieved_power,
    compare_arms,
    confidence_sequence,
    cuped_theta,
    msprt_lambda,
    ratio_stat,
    users_per_arm,
    users_still_needed,
)


def _users(rng, k, rate, mean_n=3.0):
    n = rng.poisson(mean_n - 1, k) + 1  # every user has at least one exposure
    return rng.binomial(n, rate), n


@pytest.mark.parametrize("seed", range(5))
def test_delta_method_equals_the_cluster_robust_variance(seed):
    rng = np.random.default_rng(seed)
    c, n = _users(rng, int(rng.integers(20, 300)), rng.uniform(0.05, 0.6))
    st = ratio_stat(c, n)
    # the exposure-level mean, clustered by user (CR0), is the same estimator
    y = np.concatenate([[1.0] * ci + [0.0] * (ni - ci) for ci, ni in zip(c, n, strict=True)])
    groups = np.repeat(np.arange(len(n)), n)
    fit = sm.OLS(y, np.ones_like(y)).fit(cov_type="cluster", cov_kwds={"groups": groups, "use_correction": False})
    k = len(n)
    assert st.value == pytest.approx(fit.params[0], rel=1e-12)
    assert st.var * (k - 1) / k == pytest.approx(fit.cov_params()[0, 0], rel=1e-9)  # ddof=1 against CR0


@pytest.mark.parametrize("seed", range(5))
def test_cuped_theta_is_the_ols_slope_and_reduces_variance_by_rho_squared(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=4000)
    rho = rng.uniform(0.2, 0.8)
    y = rho * x + math.sqrt(1 - rho**2) * rng.normal(size=4000)
    assert cuped_theta(y, x) == pytest.approx(sm.OLS(y, sm.add_constant(x)).fit().params[1], rel=1e-9)
    adj = y - cuped_theta(y, x) * (x - x.mean())
    assert 1 - adj.var() / y.var() == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2, rel=1e-9)
    assert cuped_theta(y, np.ones_like(x)) == 0.0  # a constant covariate adjusts nothing


def test_cuped_comparison_is_unbiased_and_narrower():
    rng = np.random.default_rng(0)
    k = 3000
    base = rng.beta(2, 6, 2 * k)  # each user's own click propensity
    x = np.clip(base + rng.normal(0, 0.05, 2 * k), 0, 1)  # their pre-experiment click rate
    n = rng.poisson(2, 2 * k) + 1
    p = np.clip(base + np.r_[np.zeros(k), np.full(k, 0.02)], 0, 1)
    c = rng.binomial(n, p)
    cmp = compare_arms(c[:k], n[:k], c[k:], n[k:], ctrl_x=x[:k], trt_x=x[k:], tau2=0.02**2)
    assert cmp.variance_reduction > 0.1  # binomial noise on ~2 exposures a user caps what X can explain
    assert cmp.cuped_var < cmp.var
    assert abs(cmp.cuped_diff - 0.02) < 3 * math.sqrt(cmp.cuped_var)
    lo, hi = cmp.cuped_ci95
    assert hi - lo < cmp.ci95[1] - cmp.ci95[0]
    slo, shi = cmp.seq_ci95
    assert slo < lo and shi > hi  # the always-valid interval is wider than the fixed-horizon one


@pytest.mark.parametrize("seed", range(5))
def test_confidence_sequence_is_where_the_mixture_likelihood_ratio_reaches_one_over_alpha(seed):
    rng = np.random.default_rng(seed)
    d, var, tau2, alpha = rng.normal(0, 0.05), rng.uniform(1e-5, 1e-3), rng.uniform(1e-4, 1e-2), 0.05
    (lo, hi), p = confidence_sequence(d, var, tau2, alpha)
    # Lambda evaluated at the boundary, with the effect moved to it, is exactly 1/alpha
    assert msprt_lambda(d - lo, var, tau2) == pytest.approx(1 / alpha, rel=1e-9)
    assert msprt_lambda(hi - d, var, tau2) == pytest.approx(1 / alpha, rel=1e-9)
    assert p == pytest.approx(min(1.0, 1 / msprt_lambda(d, var, tau2)), rel=1e-9)
    assert (p < alpha) == (not lo < 0 < hi)  # the p bound and the interval say the same thing


def test_planning_against_statsmodels_and_the_arcsine_formula():
    for base, mde in [(0.3, 0.025), (0.1, 0.01), (0.5, -0.05)]:
        h = abs(2 * math.asin(math.sqrt(base + mde)) - 2 * math.asin(math.sqrt(base)))
        by_hand = 2 * ((norm.ppf(0.975) + norm.ppf(0.8)) / h) ** 2  # per arm, two equal arms
        n = users_per_arm(base, mde)
        assert n == pytest.approx(by_hand, rel=1e-3)
        assert users_per_arm(base, mde, rho=0.5) == math.ceil(n * 0.75) or \
            abs(users_per_arm(base, mde, rho=0.5) - n * 0.75) <= 1
    assert users_per_arm(0.303, 0.025) == pytest.approx(5400, rel=0.02)  # the figure docs/SERVING.md quoted
    with pytest.raises(ValueError):
        users_per_arm(0.99, 0.05)
    assert achieved_power(0.0, 1.0) == pytest.approx(0.05)
    sd = 0.01
    assert achieved_power((norm.ppf(0.975) + norm.ppf(0.8)) * sd, sd * sd) == pytest.approx(0.8, abs=1e-3)
    need = users_still_needed(1000, 0.01, (0.01 / 2.8) ** 2)  # already at about 80% power
    assert need <= 20


def test_a_a_sequential_test_keeps_its_false_positive_rate_under_peeking_and_the_z_test_does_not():
    """1,000 simulated A/A experiments, each looked at 20 times as users arrive: stopping at the
    first look with p < 0.05 inflates the z-test's false positives; the sequential test stays under 5%."""
    rng = np.random.default_rng(7)
    sims, looks, per_look = 1000, 20, 50
    z_hits = seq_hits = 0
    for _ in range(sims):
        base = rng.beta(2, 6, 2 * looks * per_look)
        n = rng.poisson(1, base.size) + 1
        c = rng.binomial(n, base)
        ctrl, trt = slice(0, None, 2), slice(1, None, 2)
        z_seen = seq_seen = False
        for look in range(1, looks + 1):
            m = look * per_look * 2
            cmp = compare_arms(c[:m][ctrl], n[:m][ctrl], c[:m][trt], n[:m][trt], tau2=0.03**2)
            z_seen |= cmp.p_value < 0.05
            seq_seen |= cmp.seq_p_value < 0.05
        z_hits += z_seen
        seq_hits += seq_seen
    assert seq_hits / sims <= 0.05
    assert z_hits / sims > 0.10  # peeking at a fixed-horizon test: well over its nominal 5%
