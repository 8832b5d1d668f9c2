"""``ragar personalize-encoder``: from a few real images of one object to an encoder that knows it.

The recipe of seed paper 004 on this project's parts: the real images are the anchors; positives
are their augmentations, pastes on new backgrounds and the generator's renders of them in other
styles; negatives are real images of other objects (the hardest under the base encoder first,
near-identity look-alikes when the catalog has them) and the generator's renders of the nearest
other objects in *this* object's style. A LoRA on the image encoder is trained with infoNCE
(:mod:`ragar.encoders.lora`).

``variant="real-only"`` is the paper's baseline: the same anchors, augmentations, real negatives
and training budget, but no paste and no generator, so the comparison isolates what the
synthetic data adds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ragar.encoders.base import ImageLike
from ragar.encoders.configs import LoraTrainingConfig, SyntheticDataConfig
from ragar.encoders.lora import (
    PersonalizedInfo,
    cached_prefix,
    hard_negative_order,
    lora_model,
    save_personalized,
    tail_embedding,
    train_lora,
)
from ragar.encoders.synthetic import geometric_augment, paste_on_backgrounds, read_real_images

Variant = Literal["personalized", "real-only"]


@dataclass
class TrainingSet:
    """Images of every role, kept for the report (``generated_*`` empty for real-only)."""

    anchors: list[np.ndarray]
    positives: list[np.ndarray]
    negatives: list[ImageLike]
    generated_negatives: list[np.ndarray] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)


def generated_views(personalizer, reals: Sequence[np.ndarray], cfg: SyntheticDataConfig,
                    exclude_items: set[str] = frozenset()) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(positives, negatives) rendered by the personalizer's generator; see the module doc.
    ``exclude_items``: catalog items that *are* this object (never used as other objects)."""
    k = len(reals)
    ref, _, _ = personalizer.reference_vectors([None] * k, list(reals))
    query = personalizer.image_encoder.encode(list(reals)).mean(0)
    order = np.argsort(-(personalizer.catalog.image @ query), kind="stable")
    others = [int(i) for i in order if personalizer.catalog.ids[i] not in exclude_items][: cfg.neighbours]
    if not others:
        raise ValueError("the catalog has no other items to borrow styles and look-alikes from")
    rng = np.random.default_rng(cfg.seed)
    vec = personalizer.vectors
    ref = np.asarray(ref)
    pos_ref = ref[np.arange(cfg.generated_positives) % k]  # (0, D) when none are asked for
    pos_pref = vec[rng.choice(others, cfg.generated_positives)]
    neg_ref = vec[np.asarray([others[j % len(others)] for j in range(cfg.generated_negatives)], dtype=int)]
    neg_pref = ref[np.arange(cfg.generated_negatives) % k]
    pos_img, neg_img = None, None
    if getattr(personalizer.pipeline, "conditions_on_image", False):  # the generator renders a reference image
        pos_img = [reals[j % k] for j in range(cfg.generated_positives)]
        neg_ids = [personalizer.catalog.ids[others[j % len(others)]] for j in range(cfg.generated_negatives)]
        neg_img = personalizer.reference_pixels(neg_ids, [None] * len(neg_ids))
    out = []
    for refs, prefs, images, offset in ((pos_ref, pos_pref, pos_img, 0), (neg_ref, neg_pref, neg_img, 1)):
        if len(refs) == 0:
            out.append([])
            continue
        gens = [torch.Generator().manual_seed(cfg.seed * 7919 + offset * 100003 + j) for j in range(len(refs))]
        res = personalizer.pipeline(reference_embeds=torch.from_numpy(refs.astype(np.float32)),
                                    preference_embeds=torch.from_numpy(prefs.astype(np.float32)),
                                    image=images, num_images_per_request=1, generator=gens,
                                    num_inference_steps=cfg.num_inference_steps,
                                    reference_guidance_scale=cfg.reference_guidance_scale,
                                    preference_guidance_scale=cfg.preference_guidance_scale)
        out.append(list(res.images))
    return out[0], out[1]


def build_training_set(reals: Sequence[np.ndarray], negatives: Sequence[ImageLike], variant: Variant,
                       cfg: SyntheticDataConfig, personalizer=None, exclude_items: set[str] = frozenset()
                       ) -> TrainingSet:
    """Anchors = the real images and their augmentations; positives add pastes and generated
    renders for ``personalized``; negatives = ``negatives`` (+ generated ones)."""
    if not negatives:
        raise ValueError("a personalized encoder needs negative images (other objects)")
    anchors = list(reals) + geometric_augment(reals, cfg.augmentations, cfg.seed)
    kinds = {"real": len(reals), "augmented": cfg.augmentations, "real negatives": len(negatives)}
    if variant == "real-only":
        return TrainingSet(anchors, list(anchors), list(negatives), kinds=kinds)
    if variant != "personalized":
        raise ValueError(f"unknown variant {variant!r}: personalized or real-only")
    pastes = paste_on_backgrounds(reals, cfg.pastes, cfg.seed) if cfg.pastes else []
    gen_pos, gen_neg = ([], []) if personalizer is None else generated_views(personalizer, reals, cfg, exclude_items)
    kinds |= {"pasted": len(pastes), "generated positives": len(gen_pos), "generated negatives": len(gen_neg)}
    return TrainingSet(anchors, anchors + pastes + gen_pos, list(negatives) + gen_neg, gen_neg, kinds)


@dataclass
class PersonalizedResult:
    model: torch.nn.Module
    losses: list[float]
    training_set: TrainingSet
    seconds: dict


def train_personalized_encoder(images: Sequence[ImageLike], negatives: Sequence[ImageLike], *,
                               variant: Variant = "personalized", personalizer=None,
                               data: SyntheticDataConfig | None = None, lora: LoraTrainingConfig | None = None,
                               exclude_items: set[str] = frozenset(), negative_prefix: torch.Tensor | None = None,
                               hard_order: np.ndarray | None = None, progress: bool = False,
                               device: torch.device | str = "cpu") -> PersonalizedResult:
    """The whole recipe for one object. ``negative_prefix`` / ``hard_order``: prefix features of
    ``negatives`` and their hardness order, when the caller already has them (an evaluation over
    many objects shares them); otherwise computed here."""
    data = data or SyntheticDataConfig()
    lora = lora or LoraTrainingConfig()
    t0 = time.perf_counter()
    reals = read_real_images(images)
    ts = build_training_set(reals, negatives, variant, data, personalizer, exclude_items)
    t1 = time.perf_counter()
    model = lora_model(lora)
    anchors = cached_prefix(model, ts.anchors, lora)
    # positives begin with the anchors (TrainingSet): their features are reused, not recomputed
    positives = torch.cat([anchors, cached_prefix(model, ts.positives[len(ts.anchors):], lora)]) \
        if len(ts.positives) > len(ts.anchors) else anchors
    if negative_prefix is None:
        negative_prefix = cached_prefix(model, list(negatives), lora)
    if ts.generated_negatives:
        negative_prefix = torch.cat([negative_prefix, cached_prefix(model, ts.generated_negatives, lora)])
    if hard_order is None:
        with torch.no_grad():
            hard_order = hard_negative_order(tail_embedding(model, negative_prefix, lora.first_block),
                                             tail_embedding(model, anchors[: len(reals)], lora.first_block))
    elif ts.generated_negatives:  # generated look-alikes count as hard: put them first
        first = np.arange(len(negatives), len(negative_prefix))
        hard_order = np.concatenate([first, hard_order])
    t2 = time.perf_counter()
    model, losses = train_lora(anchors, positives, negative_prefix, lora, hard_order, model, progress, device)
    t3 = time.perf_counter()
    return PersonalizedResult(model, losses, ts, {"data_s": t1 - t0, "features_s": t2 - t1, "train_s": t3 - t2})


def save_result(res: PersonalizedResult, out: str | Path, name: str, variant: str, lora: LoraTrainingConfig,
                data: SyntheticDataConfig, sources: list[str]) -> Path:
    info = PersonalizedInfo(image_size=lora.image_size, first_block=lora.first_block, name=name, training={
        "variant": variant, "images": sources, "kinds": res.training_set.kinds, "lora": lora.model_dump(),
        "data": data.model_dump(), "first_loss": float(np.mean(res.losses[:10])),
        "final_loss": float(np.mean(res.losses[-10:])), "seconds": res.seconds})
    return save_personalized(res.model, out, info)
