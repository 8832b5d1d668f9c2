"""Personalized generation end to end on the tiny world: preference weights, one batched call for
N candidates, scores and best-of-N selection, fallbacks and every bad input."""

import io

import numpy as np
import polars as pl
import pytest
from PIL import Image

from ragar.encoders.base import ImageInputError
from ragar.generation.personalize import Personalizer


@pytest.fixture(scope="module")
def request_pair(tiny_world):
    inter = pl.read_parquet(tiny_world / "interactions.parquet")
    user = inter.filter(pl.col("event_type") == "click")["user_id"][0]
    item = pl.read_parquet(tiny_world / "items.parquet")["item_id"][0]
    return user, item


def test_candidates_scores_and_weights(tiny_personalizer, request_pair):
    user, item = request_pair
    (res,) = tiny_personalizer(user, item, n=3, seed=7)
    assert len(res.candidates) == 3 and res.candidates[0].image.shape == (16, 16, 3)
    assert res.candidates[0].image.dtype == np.uint8
    assert res.fallback is None and not res.cold_start_ranker
    fits = [c.preference_fit for c in res.candidates]
    assert all(0 < f < 1 for f in fits)
    assert all(-1 <= c.identity <= 1 for c in res.candidates)
    # best-of-N: the chosen candidate has the highest selection score
    assert res.chosen == int(np.argmax([c.selection for c in res.candidates]))
    w = np.array([h.weight for h in res.history])
    assert w.sum() == pytest.approx(1.0, abs=1e-5) and (np.diff(w) <= 1e-9).all()  # heaviest first
    assert res.timings["generation_s"] > 0
    # the ranker's embedding of each candidate comes back (computed once, reused by replay)
    emb = np.stack([c.embedding for c in res.candidates])
    assert emb.shape[0] == 3 and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    (unscored,) = tiny_personalizer(user, item, n=1, seed=7, score=False)
    assert unscored.candidates[0].embedding is None


def test_same_seed_same_images_independent_of_batching(tiny_personalizer, request_pair):
    user, item = request_pair
    (a,) = tiny_personalizer(user, item, n=2, seed=3, score=False)
    both = tiny_personalizer([user, user], [item, item], n=2, seed=[5, 3], score=False)
    # the same noise; batched matmuls may round a pixel differently by one level
    diff = np.abs(a.candidates[1].image.astype(int) - both[1].candidates[1].image)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    assert not np.array_equal(both[0].candidates[0].image, both[1].candidates[0].image)


def test_methods_change_weights(tiny_personalizer, request_pair):
    user, item = request_pair
    (r,) = tiny_personalizer(user, item, n=1, method="ragar", score=False)
    (u,) = tiny_personalizer(user, item, n=1, method="uniform", score=False)
    (o,) = tiny_personalizer(user, item, n=1, method="reference-only", score=False)
    wu = np.array([h.weight for h in u.history])
    assert len(wu) > 1 and np.allclose(wu, 1 / len(wu), atol=1e-5)  # uniform spreads over every item
    assert np.ptp(wu[wu > 0]) < 1e-3
    assert sum(h.weight for h in o.history) == 0  # reference-only uses no history
    assert max(h.weight for h in r.history) > max(wu)


def test_given_preference_embeds_replace_the_history(tiny_personalizer, request_pair):
    """The oracle row's path: the same embedding given directly renders the same image as the
    history weighting that produced it; another embedding renders another; a wrong shape is an error."""
    user, item = request_pair
    (r,) = tiny_personalizer(user, item, n=1, seed=4, score=False)
    ref = tiny_personalizer.vectors[tiny_personalizer.positions[item]][None]
    pref, _, _ = tiny_personalizer.preference_embeddings([user], ref, "ragar")
    (g,) = tiny_personalizer(user, item, n=1, seed=4, score=False, preference_embeds=pref)
    np.testing.assert_array_equal(g.best.image, r.best.image)
    assert g.history == [] and g.fallback is None
    (o,) = tiny_personalizer(user, item, n=1, seed=4, score=False, preference_embeds=-pref)
    assert not np.array_equal(o.best.image, r.best.image)
    with pytest.raises(ValueError, match="preference_embeds must be"):
        tiny_personalizer(user, item, preference_embeds=pref[:, :-1])


def test_unknown_user_falls_back(tiny_personalizer, request_pair):
    _, item = request_pair
    (res,) = tiny_personalizer("u999999", item, n=1)
    assert res.fallback == "unknown-user" and res.history == [] and res.cold_start_ranker


def test_bad_inputs(tiny_personalizer, request_pair, tmp_path):
    user, item = request_pair
    with pytest.raises(KeyError, match="unknown item"):
        tiny_personalizer(user, "no-such-item")
    with pytest.raises(ValueError, match="between 1 and 16"):
        tiny_personalizer(user, item, n=17)
    with pytest.raises(ValueError, match="between 1 and"):
        tiny_personalizer(user, item, n=0)
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageInputError):
        tiny_personalizer(user, None, bad)
    with pytest.raises(ImageInputError):
        tiny_personalizer(user, None, np.zeros((5000, 5000, 3), np.uint8))
    with pytest.raises(ValueError, match="reference"):
        tiny_personalizer(user, None, None)


def test_uploaded_reference(tiny_personalizer, request_pair, tiny_world):
    user, _ = request_pair
    path = tiny_world / pl.read_parquet(tiny_world / "items.parquet")["image"][0]
    buf = io.BytesIO()
    Image.open(path).save(buf, format="PNG")
    (res,) = tiny_personalizer(user, None, buf.getvalue(), n=2)
    assert res.reference_source.startswith("upload (text from ") and len(res.candidates) == 2


def test_selection_tradeoff():
    fit = np.array([[0.1, 0.9, 0.5]])
    ident = np.array([[0.9, 0.1, 0.8]])
    assert Personalizer.select(fit, ident, 1.0)[1][0] == 1
    assert Personalizer.select(fit, ident, 0.0)[1][0] == 0
    s, c = Personalizer.select(fit, ident, 0.5)
    assert c[0] == 2 and s[0, 2] == pytest.approx(0.5 * 0.5 + 0.5 * (0.7 / 0.8))
    # ties and missing fits degrade to identity, never NaN
    s, c = Personalizer.select(np.full((1, 3), np.nan), ident, 0.5)
    assert np.isfinite(s).all() and c[0] == 0


def test_a_request_builds_its_history_once(tiny_personalizer, request_pair, monkeypatch):
    """The preference weights and the ranker read the same history batch: one build of the
    user's positives per call (the ranker still builds its skips), and the same scores as when
    the ranker builds its own."""
    import recsys.history

    user, item = request_pair
    calls = []
    real = recsys.history.build_histories

    def counting(*a, **k):
        calls.append(k.get("events"))
        return real(*a, **k)

    for mod in ("ragar.generation.personalize", "recsys.ranking.scoring"):
        monkeypatch.setattr(f"{mod}.build_histories", counting)
    (res,) = tiny_personalizer([user], [item], n=2, seed=3)
    assert calls.count(None) == 1 and calls.count(("skip",)) == 1, calls
    own = tiny_personalizer.scorer.score([user], np.stack([c.embedding for c in res.candidates])[None])
    assert np.allclose(own.probabilities[0], [c.preference_fit for c in res.candidates], atol=1e-6)
