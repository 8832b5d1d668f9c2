"""ragar.generation.rank_task directly: the pairwise ranking loss through a frozen ranker."""

from __future__ import annotations

import math

import polars as pl
import pytest
import torch
from diffusers import DDPMScheduler
from torch import nn

from ragar.generation.rank_task import RankTask, predicted_clean


class TinyImageModel(nn.Module):
    """A differentiable stand-in for the image encoder with its ``extract_features`` contract."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(3, dim, 3, padding=1)

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_predicted_clean_undoes_the_forward_noise(kind):
    sched = DDPMScheduler(num_train_timesteps=100, prediction_type=kind)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1
    eps = torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0, 10, 50, 99])
    xt = sched.add_noise(x0, eps, t)
    target = eps if kind == "epsilon" else sched.get_velocity(x0, eps, t)
    assert torch.allclose(predicted_clean(sched, xt, target, t), x0, atol=1e-4)
    assert not torch.allclose(predicted_clean(sched, xt, torch.zeros_like(eps), t)[1:], x0[1:], atol=1e-2)


def test_predicted_clean_refuses_an_unknown_parameterisation():
    with pytest.raises(ValueError, match="sample"):
        predicted_clean(DDPMScheduler(num_train_timesteps=10, prediction_type="sample"), torch.zeros(1, 3, 2, 2),
                        torch.zeros(1, 3, 2, 2), torch.tensor([1]))


@pytest.fixture(scope="module")
def task(tiny_personalizer, tiny_world):
    scorer = tiny_personalizer.scorer
    inter = pl.read_parquet(tiny_world / "interactions.parquet")
    users = inter["user_id"].unique(maintain_order=True).to_list()[:3]
    as_of = [inter["timestamp"].max()] * 3
    torch.manual_seed(0)
    return RankTask(scorer, TinyImageModel(scorer.model.config.cand_dim), 16, users, as_of)


def _pair(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two predicted clean images per pair in [-1, 1] (the own one differentiable), rows 0..2."""
    g = torch.Generator().manual_seed(seed)
    own = (torch.rand(3, 3, 16, 16, generator=g) * 2 - 1).requires_grad_(True)
    return own, torch.rand(3, 3, 16, 16, generator=g) * 2 - 1, torch.tensor([0, 1, 2])


def test_the_loss_is_the_pairwise_softplus_of_the_ranker(task):
    own, other, rows = _pair(1)
    loss = task.loss(own, other, rows)
    emb = task.embed(torch.cat([own, other]).detach())
    logits = task.scorer.logits(task.inputs.take(rows), torch.stack([emb[:3], emb[3:]], 1))
    assert loss.item() == pytest.approx(nn.functional.softplus(logits[:, 1] - logits[:, 0]).mean().item(), rel=1e-5)
    wins = float((logits[:, 0] > logits[:, 1]).float().mean())
    assert task.win_rate(own.detach(), other, rows) == pytest.approx(wins)
    # the same image on both sides: no preference either way
    assert task.loss(other, other, rows).item() == pytest.approx(math.log(2), rel=1e-5)
    # the gradient reaches the generated image and nothing frozen
    loss.backward()
    assert own.grad is not None and own.grad.abs().sum() > 0
    assert all(p.grad is None for p in task.scorer.model.parameters())
    assert all(p.grad is None for p in task.image_model.parameters())


def test_a_step_against_the_gradient_lowers_the_loss(task):
    """What fine-tuning relies on: moving the own image along -grad makes the ranker prefer it."""
    own, other, rows = _pair(2)
    before = task.loss(own, other, rows)
    before.backward()
    with torch.no_grad():
        stepped = (own - 0.05 * own.grad / own.grad.abs().max()).clamp(-1, 1)
    assert task.loss(stepped, other, rows).item() < before.item()
