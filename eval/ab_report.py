"""The experiment report a person reads: tables and figures built from the analysis' dict
(``serving.analysis.experiment_report``). Builds; the CLI writes and prints."""

from __future__ import annotations

import matplotlib.pyplot as plt
from statsmodels.stats.proportion import proportion_confint

from eval.report import HtmlReport  # sets the Agg backend


def _ci(ci) -> str:
    return f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else ""


def user_level_rows(rep: dict) -> list[dict]:
    """The primary view: per treatment arm and metric, users as units."""
    rows = []
    for r in rep["user_level"]:
        cuped = r.get("cuped_diff") is not None
        rows.append({"arm": r["arm"], "metric": r["metric"], "users": r["users"], "rate": r["rate"],
                     "lift": r.get("cuped_diff") if cuped else r.get("diff"),
                     "ci95": _ci(r.get("cuped_ci95") if cuped else r.get("ci95")),
                     "p": r.get("cuped_p_value") if cuped else r.get("p_value"),
                     "always_valid_ci95": _ci(r.get("seq_ci95")), "always_valid_p": r.get("seq_p_value"),
                     "variance_reduction": r.get("variance_reduction"),
                     "decision": rep["decision"].get(r["arm"], "") if r["metric"] == "click" else ""})
    return rows


def exposure_rows(rep: dict) -> list[dict]:
    """The secondary view: per arm, exposures as units."""
    rows = []
    for a in rep["arms"]:
        row = {"arm": a["arm"], "exposures": a["exposures"], "users": a["users"], "click_rate": a["click_rate"],
               "like_rate": a["like_rate"]}
        for what in ("click", "like"):
            row[f"{what}_lift"] = a.get(f"{what}_lift_abs")
            row[f"{what}_lift_ci95"] = _ci(a.get(f"{what}_lift_abs_ci95"))
            row[f"{what}_p"] = a.get(f"{what}_p_value")
        rows.append(row)
    return rows


def rates_figure(rep: dict) -> plt.Figure:
    """Per-arm rates with Wilson intervals; the bars never go below zero or above one (an arm with
    no event, or only events, has a bound a hair outside [0, 1] from floating point)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    names = [a["arm"] for a in rep["arms"]]
    for ax, what in zip(axes, ("click", "like"), strict=True):
        rates, errs = [], [[], []]
        for a in rep["arms"]:
            n, k = a["exposures"], a[f"{what}s"]
            p = k / n if n else 0.0
            lo, hi = proportion_confint(k, n, method="wilson") if n else (0.0, 0.0)
            rates.append(p)
            errs[0].append(max(0.0, p - max(0.0, lo)))
            errs[1].append(max(0.0, min(1.0, hi) - p))
        ax.bar(names, rates, yerr=errs, capsize=6, color=["#999"] + ["#47c"] * (len(names) - 1))
        ax.set_title(f"{what} rate per exposure (95% Wilson CI)")
        ax.set_ylim(0, max(0.05, max(r + e for r, e in zip(rates, errs[1], strict=True)) * 1.2))
    fig.tight_layout()
    return fig


def timeline_figure(rep: dict) -> plt.Figure | None:
    """The primary lift over the experiment: the fixed-horizon interval (valid only at a planned
    end) and the always-valid one (valid at every look)."""
    looks = [t for t in rep["timeline"] if t["ci95"] and t["seq_ci95"]]
    if len(looks) < 2:
        return None
    x = [t["exposures"] for t in looks]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.fill_between(x, [t["seq_ci95"][0] for t in looks], [t["seq_ci95"][1] for t in looks], color="#47c",
                    alpha=0.25, label="always-valid 95% (mixture SPRT)")
    ax.fill_between(x, [t["ci95"][0] for t in looks], [t["ci95"][1] for t in looks], color="#e84", alpha=0.35,
                    label="fixed-horizon 95%")
    ax.plot(x, [t["diff"] for t in looks], color="k", lw=1.2, label="lift")
    ax.axhline(0, color="#555", lw=0.8, ls="--")
    ax.set_xlabel("exposures so far")
    ax.set_ylabel(f"{rep['primary_metric']} lift")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def ab_report_html(rep: dict, exp) -> HtmlReport:
    html = HtmlReport(f"Experiment {rep['experiment']}")
    html.paragraph(exp.description or "")
    html.paragraph(f"Arms and shares: {', '.join(f'{a.name} {a.share:g}' for a in exp.arms)}. Control: "
                   f"{rep['control']}. Primary metric: {rep['primary_metric']}, users as units (delta method)"
                   + (", CUPED-adjusted by each user's pre-experiment click rate" if rep["cuped"] else "")
                   + f"; always-valid intervals from a mixture SPRT (tau = {rep['sequential_tau']:g}), which may be "
                   "read at any time.")
    html.heading("Decision")
    html.table([{"arm": a, "decision": d} for a, d in rep["decision"].items()])
    html.table(user_level_rows(rep), caption="user-level lifts against the control")
    fig = timeline_figure(rep)
    if fig is not None:
        html.figure(fig, "the primary lift as the experiment ran: the fixed-horizon interval is valid only at a "
                         "planned end; the always-valid one at every look")
    p = rep["plan"]
    html.heading("Plan")
    html.paragraph(f"To detect {p['mde']:+g} on a baseline of {p['baseline']} at alpha {p['alpha']:g} and power "
                   f"{p['power']:g}: {p['users_per_arm_needed']} users per arm; now {p['users_per_arm_now']} "
                   f"(progress {p['progress']}). Power at the measured variance: {p['achieved_power']}; "
                   f"users still needed per arm: {p['users_still_needed']}. Against the effect observed so far "
                   f"({p.get('observed_effect')}): {p.get('users_still_needed_for_observed')} more users per arm.")
    html.heading("Guardrails")
    html.table([{**g, "breaches": "; ".join(g["breaches"]) or "none"} for g in rep["guardrails"]])
    html.heading("Per exposure (secondary view)")
    html.paragraph("Exposures taken as independent: narrower than the user-level intervals when users return. "
                   "Absolute lift: Wald 95% CI; p: two-proportion z-test.")
    html.table(exposure_rows(rep))
    srm = "SAMPLE RATIO MISMATCH" if rep["srm_detected"] else "no sample ratio mismatch"
    html.paragraph(f"{srm}: chi-square {rep['srm_chi2']}, p = {rep['srm_p_value']} (flagged below p = 0.001).")
    html.figure(rates_figure(rep), "rates per arm")
    return html
