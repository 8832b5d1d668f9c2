"""eval.personalized_repr directly: the protocol's splits on the world, and the summary's numbers."""

from __future__ import annotations

import numpy as np
import pytest

from eval.personalized_repr import ENCODERS, summarize, world_protocol


def test_the_gallery_never_meets_training(tiny_world):
    p = world_protocol(tiny_world, n_identities=2, holdout=0.5, seed=0, n_real=2)
    held = set(p.identity[p.gallery])
    assert held and held.isdisjoint(set(p.identity[p.negatives]))  # no held-out identity is trained against
    assert len(p.gallery) + len(p.negatives) == len(p.paths)
    assert len(p.targets) == 2 and len({t["category"] for t in p.targets}) == 2  # spread over categories
    for t in p.targets:
        assert t["identity"] in held and len(t["real"]) == 2
        assert all(p.is_view[r] and p.identity[r] == t["identity"] for r in t["real"])  # views of one item
    with pytest.raises(ValueError, match="identities"):
        world_protocol(tiny_world, n_identities=500, holdout=0.5)
    with pytest.raises(FileNotFoundError, match=r"views\.parquet"):
        world_protocol(tiny_world / "nowhere")


def test_summary_means_and_paired_gains():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.4, 30)
    rows = [{f"{e}/{m}": b + {"base": 0.0, "real-only": 0.05, "personalized": 0.1}[e] + (0.01 if m == "pr_auc" else 0)
             for e in ENCODERS for m in ("ndcg", "pr_auc")} for b in base]
    s = summarize(rows, seed=0)
    enc = {(r["encoder"], r["metric"]): r for r in s["encoders"]}
    assert enc[("base", "ndcg")]["mean"] == pytest.approx(base.mean())
    assert enc[("base", "ndcg")]["ci_low"] < base.mean() < enc[("base", "ndcg")]["ci_high"]
    diff = {(r["comparison"], r["metric"]): r for r in s["differences"]}
    d = diff[("personalized - base", "ndcg")]
    # a constant paired gain has a zero-width interval: pairing removes the identities' spread
    assert d["mean"] == pytest.approx(0.1) and d["ci_high"] - d["ci_low"] < 1e-9
    assert d["wins"] == 30 and d["relative"] == pytest.approx(0.1 / base.mean())
    assert diff[("personalized - real-only", "pr_auc")]["mean"] == pytest.approx(0.05)
