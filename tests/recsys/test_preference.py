import numpy as np
import pytest
import torch

from recsys.preference import PreferenceConfig, RetrievalPreference, naive_preference

CFG = PreferenceConfig(top_k=5, temperature=0.1)


def _data(b=6, n=12, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, d, generator=g), torch.randn(b, d, generator=g)


@pytest.mark.parametrize("method", ["ragar", "uniform", "recency"])
def test_weights_sum_to_one_and_are_nonnegative(method):
    h, r = _data()
    res = RetrievalPreference(CFG, method=method)(h, r)
    assert torch.allclose(res.weights.sum(1), torch.ones(len(h)), atol=1e-5)
    assert (res.weights >= 0).all()


def test_ragar_is_permutation_equivariant():
    h, r = _data()
    perm = torch.randperm(h.shape[1], generator=torch.Generator().manual_seed(1))
    a = RetrievalPreference(CFG)(h, r)
    b = RetrievalPreference(CFG)(h[:, perm], r)
    assert torch.allclose(a.weights[:, perm], b.weights, atol=1e-6)
    assert torch.allclose(a.embedding, b.embedding, atol=1e-5)


@pytest.mark.parametrize("method", ["ragar", "uniform", "recency", "reference-only"])
@pytest.mark.parametrize("floor", [None, 0.1])
def test_batched_equals_naive(method, floor):
    h, r = _data(b=5, n=9, d=8, seed=3)
    mask = torch.ones(5, 9, dtype=torch.bool)
    mask[1, 6:] = False  # ragged histories
    mask[3, 2:] = False
    cfg = CFG.model_copy(update={"method": method, "floor": floor})
    res = RetrievalPreference(cfg)(h, r, mask)
    for i in range(5):
        n = int(mask[i].sum())
        emb, w = naive_preference(h[i, :n].numpy(), r[i].numpy(), cfg)
        np.testing.assert_allclose(res.weights[i, :n].numpy(), w, atol=1e-5)
        np.testing.assert_allclose(res.embedding[i].numpy(), emb, atol=1e-5)


def test_topk_larger_than_history_keeps_everything():
    h, r = _data(b=2, n=3)
    res = RetrievalPreference(CFG, top_k=50)(h, r)
    assert (res.weights > 0).all()


def test_topk_keeps_the_most_similar():
    h, r = _data(b=3, n=10)
    res = RetrievalPreference(CFG, top_k=3)(h, r)
    assert ((res.weights > 0).sum(1) == 3).all()
    top = res.similarity.topk(3, dim=1).indices
    assert torch.equal(torch.sort(top, 1).values, torch.sort((res.weights > 0).nonzero()[:, 1].view(3, 3), 1).values)


def test_higher_similarity_gets_higher_weight():
    r = torch.tensor([[1.0, 0.0]])
    h = torch.tensor([[[1.0, 0.1], [1.0, 1.0], [0.0, 1.0]]])
    w = RetrievalPreference(CFG, top_k=3)(h, r).weights[0]
    assert w[0] > w[1] > w[2]


def test_all_below_floor_and_empty_history_fall_back_to_reference():
    h, r = _data(b=3, n=4)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[2] = False
    res = RetrievalPreference(CFG, floor=0.99)(h, r, mask)
    assert res.fallback == ["all-below-floor", "all-below-floor", "empty-history"]
    assert torch.equal(res.embedding, r)
    assert (res.weights == 0).all()
    # a partial floor keeps only what clears it
    res2 = RetrievalPreference(CFG, floor=0.0, top_k=10)(h, r)
    for i in range(3):
        if res2.fallback[i] is None:
            assert torch.equal(res2.weights[i] > 0, res2.similarity[i] >= 0)
        else:
            assert (res2.similarity[i] < 0).all()


def test_event_weights_and_recency_decay():
    h = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    r = torch.tensor([[1.0, 0.0]])
    m = RetrievalPreference(CFG)
    w = m(h, r, event_weight=torch.tensor([[1.0, 3.0]])).weights[0]
    assert torch.allclose(w, torch.tensor([0.25, 0.75]), atol=1e-6)
    w = RetrievalPreference(CFG, half_life_days=1.0)(h, r, age_days=torch.tensor([[1.0, 0.0]])).weights[0]
    assert torch.allclose(w, torch.tensor([1 / 3, 2 / 3]), atol=1e-6)
    w = RetrievalPreference(CFG, method="recency", recency_half_life_days=1.0)(h, r).weights[0]
    assert w[1] > w[0]  # newest last


def test_reference_only_ignores_history():
    h, r = _data()
    res = RetrievalPreference(CFG, method="reference-only")(h, r)
    assert torch.equal(res.embedding, r) and (res.weights == 0).all()


@pytest.mark.parametrize("bad,match", [
    ("nan_h", "history embeddings contain NaN"), ("nan_r", "reference embedding contains NaN"),
    ("zero_h", "zero vector"), ("zero_r", "zero vector"), ("dims", "mismatched shapes"), ("rank", "must be"),
])
def test_invalid_inputs(bad, match):
    h, r = _data(b=2, n=3, d=4)
    if bad == "nan_h":
        h[0, 1, 2] = float("nan")
    elif bad == "nan_r":
        r[1, 0] = float("nan")
    elif bad == "zero_h":
        h[1, 2] = 0
    elif bad == "zero_r":
        r[0] = 0
    elif bad == "dims":
        r = torch.randn(2, 5)
    else:
        h = h[0]
    with pytest.raises(ValueError, match=match):
        RetrievalPreference(CFG)(h, r)


def test_padding_may_hold_garbage():
    h, r = _data(b=2, n=4)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    h2 = h.clone()
    h2[0, 2:] = float("nan")  # padding is never read
    a = RetrievalPreference(CFG)(h, r, mask)
    b = RetrievalPreference(CFG)(h2, r, mask)
    assert torch.allclose(a.embedding, b.embedding)
