"""Semantic and personalization metrics against hand-computed and degenerate cases."""

import numpy as np
import pytest
import torch

from eval.metrics.semantic import (
    EmbeddingSimilarity,
    HistorySimilarity,
    embedding_similarity,
    history_similarity,
    ssim,
)


def test_embedding_similarity_hand_computed():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 2.0], [3.0, 3.0]])
    assert torch.allclose(embedding_similarity(a, b), torch.tensor([0.0, float(100 / np.sqrt(2))]))
    m = EmbeddingSimilarity()
    m.update(a, b)
    m.update(a, a)  # identical images: 100
    assert m.compute().item() == pytest.approx((0 + 70.7107 + 200) / 4, abs=1e-3)
    with pytest.raises(ValueError, match="NaN"):
        embedding_similarity(torch.tensor([[float("nan"), 0.0]]), a[:1])


def test_history_similarity_masks_and_empty_history():
    g = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    h = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [5.0, 5.0]]])
    mask = torch.tensor([[True, True], [False, False]])
    s = history_similarity(g, h, mask)
    assert s[0].item() == pytest.approx(50.0) and torch.isnan(s[1])
    m = HistorySimilarity()
    m.update(g, h, mask)
    assert m.compute().item() == pytest.approx(50.0)  # the empty history is not counted as 0


def test_ssim_identical_and_different():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8))
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
    assert (ssim(x, 255 - x) < 0.5).all()
    big = torch.nn.functional.interpolate(x.permute(0, 3, 1, 2).float() / 255, size=(64, 64))
    assert ssim(x, big).shape == (2,)
