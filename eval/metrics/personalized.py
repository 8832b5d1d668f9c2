"""Personalized-representation metrics (seed paper 004): how well an encoder singles out *one*
object, given its few real images as anchors.

* **retrieval NDCG**: each anchor queries a gallery by cosine; binary relevance (the object's other
  images), NDCG over the whole ranking, averaged over the anchors.
* **classification PR-AUC**: one-vs-all; a gallery image's score is its highest cosine to any
  anchor (nearest-anchor classifier); average precision of those scores.

Both come from torchmetrics' functional retrieval / classification code; the ``Metric`` keeps one
value per object (``update`` = one object) so means and bootstrap intervals are over objects.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_average_precision
from torchmetrics.functional.retrieval import retrieval_normalized_dcg

from eval.metrics._inputs import unit_rows


def _check(anchors, gallery, relevant) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    a = unit_rows(anchors, "anchor embeddings", ndim=2, nonempty=True)
    g = unit_rows(gallery, "gallery embeddings", ndim=2, nonempty=True)
    rel = torch.as_tensor(relevant, dtype=torch.bool)
    if a.shape[1] != g.shape[1]:
        raise ValueError(f"anchors are {a.shape[1]}-d but the gallery is {g.shape[1]}-d")
    if rel.shape != (len(g),):
        raise ValueError(f"relevant must have one flag per gallery image ({len(g)}), got {tuple(rel.shape)}")
    if not rel.any():
        raise ValueError("the gallery holds no image of the object: nothing to retrieve")
    return a, g, rel


def personalized_retrieval_ndcg(anchors, gallery, relevant) -> float:
    """Mean over anchors of NDCG (full ranking) of the relevant gallery images."""
    a, g, rel = _check(anchors, gallery, relevant)
    s = a @ g.T
    return float(torch.stack([retrieval_normalized_dcg(row, rel) for row in s]).mean())


def personalized_pr_auc(anchors, gallery, relevant) -> float:
    """Average precision of the nearest-anchor cosine as a one-vs-all classifier."""
    a, g, rel = _check(anchors, gallery, relevant)
    score = (g @ a.T).amax(1)
    return float(binary_average_precision(score, rel.long()))


class PersonalizedRepresentation(Metric):
    """One ``update`` per object; ``compute`` gives the mean NDCG and PR-AUC over objects."""

    higher_is_better = True
    is_differentiable = False
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("ndcg", default=[], dist_reduce_fx="cat")
        self.add_state("pr_auc", default=[], dist_reduce_fx="cat")

    def update(self, anchors, gallery, relevant) -> None:
        self.ndcg.append(torch.tensor([personalized_retrieval_ndcg(anchors, gallery, relevant)]))
        self.pr_auc.append(torch.tensor([personalized_pr_auc(anchors, gallery, relevant)]))

    def compute(self) -> dict[str, torch.Tensor]:
        if not self.ndcg:
            raise ValueError("no object was added: call update() first")
        def cat(v):
            return (torch.cat(v) if isinstance(v, list) else v)
        return {"ndcg": cat(self.ndcg).mean(), "pr_auc": cat(self.pr_auc).mean()}
