"""serving.alignment directly: judgments in a real SQLite store, scored against what was stored."""

from __future__ import annotations

import polars as pl
import pytest

from serving.alignment import agreement, alignment_table, export_ranked_pairs, judgment_scores
from serving.store import EventStore


def _frame(a, b, choice):
    return pl.DataFrame({"s_a": a, "s_b": b, "preference_choice": choice})


def test_agreement_counts_the_side_people_chose():
    perfect = agreement(_frame([0.9, 0.1, 0.7], [0.2, 0.8, 0.1], ["a", "b", "a"]), "s", "preference_choice")
    assert perfect["pairs"] == 3 and perfect["pairwise_accuracy"] == 1.0
    wrong = agreement(_frame([0.1, 0.9, 0.2], [0.2, 0.8, 0.7], ["a", "b", "a"]), "s", "preference_choice")
    assert wrong["pairwise_accuracy"] == 0.0
    # tau-b against a two-valued choice: +-1 only without ties among the choices; here 2 "a", 1 "b"
    assert perfect["kendall_tau"] == pytest.approx(-wrong["kendall_tau"]) and perfect["kendall_tau"] > 0.8
    # a tie counts a half; a missing score drops its pair
    mixed = agreement(_frame([0.5, 0.9, None], [0.5, 0.1, 0.3], ["a", "a", "b"]), "s", "preference_choice")
    assert mixed["pairs"] == 2 and mixed["pairwise_accuracy"] == 0.75
    empty = agreement(_frame([None], [None], ["a"]).cast({"s_a": pl.Float64, "s_b": pl.Float64}), "s",
                      "preference_choice")
    assert empty["pairs"] == 0 and empty["pairwise_accuracy"] is None and empty["kendall_tau"] is None


@pytest.fixture
def store(tmp_path):
    s = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    s.migrate()
    yield s
    s.dispose()


def _expose(store, rid, user, ref, fit, ident):
    store.record_exposure(request_id=rid, experiment="e", arm="ragar", user_id=user, reference_item_id=ref,
                          reference_source="catalog", method="ragar", n=1, seed=0, chosen=0, fallback=None,
                          payload={"candidates": [{"preference_fit": fit, "identity": ident, "selection": fit}]})


def test_scores_come_from_the_stored_payloads(store, tmp_path):
    fits = {"r0": 0.9, "r1": 0.2, "r2": 0.4, "r3": 0.6}
    for rid, f in fits.items():
        _expose(store, rid, "u1", "item-1" if rid in ("r0", "r1") else None, f, 1 - f)
    # people agree with the ranker on fit in both pairs, and with identity in one of two
    store.record_judgment(idempotency_key="j1", request_a="r0", request_b="r1", preference_choice="a",
                          identity_choice="b")
    store.record_judgment(idempotency_key="j2", request_a="r2", request_b="r3", preference_choice="b",
                          identity_choice="b")
    scores = judgment_scores(store, extra={"oracle": {"r0": 1.0, "r1": 0.0, "r2": 0.0, "r3": 1.0}})
    assert scores.height == 2 and scores["preference_fit_a"].to_list() == [0.9, 0.4]
    rows = {(r["metric"], r["judged_by"]): r for r in alignment_table(scores, ("oracle",))}
    assert rows[("preference_fit", "preference_choice")]["pairwise_accuracy"] == 1.0
    assert rows[("oracle", "preference_choice")]["pairwise_accuracy"] == 1.0
    ident = rows[("identity", "identity_choice")]
    assert ident["pairs"] == 2 and ident["pairwise_accuracy"] == 0.5
    # only the pair whose reference image is known becomes a CLPIPS ranked pair
    ref = tmp_path / "item-1.png"
    ref.write_bytes(b"")
    n = export_ranked_pairs(store, tmp_path / "images", {"item-1": str(ref)}, tmp_path / "pairs.csv")
    out = pl.read_csv(tmp_path / "pairs.csv")
    assert n == 1 and out["closer"].to_list() == ["b"] and out["reference"][0] == str(ref.resolve())


def test_no_judgments_is_an_empty_frame(store):
    assert judgment_scores(store).height == 0
