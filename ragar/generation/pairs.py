"""The generator's training pairs: one per positive event, the target aligned with its reference.

See :func:`make_pairs`; :mod:`ragar.generation.train` trains on them. Kept apart so the pair
recipe (what the generator learns to do) reads on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from recsys.preference import PreferenceConfig, weigh_histories
from recsys.world.render import Identity, Style, View, render

if TYPE_CHECKING:  # polars is imported where the world is read: training runs on exported tensors without it
    import polars as pl


@dataclass
class GeneratorPairs:
    targets: torch.Tensor | None  # (P, 3, S, S) in [-1, 1]; None before rendering (scenes)
    reference: torch.Tensor   # (P, D)
    preference: torch.Tensor  # (P, D)
    user_ids: list[str]
    times: list  # datetime of each pair's event: the ranker sees the history before it
    target_items: list[str]
    reference_items: list[str]
    style_pair: torch.Tensor | None = None  # (P,) bool: the preference is same-style items, not history
    reference_images: torch.Tensor | None = None  # (P, 3, S, S) in [-1, 1]: the reference, aligned with the target
    # what each pair shows, for rendering elsewhere (make_pairs(render_images=False); ragar.generation.portable):
    # (identity, target style, reference style, view) per pair
    scenes: list[tuple[Identity, Style, Style, View]] | None = None


def render_scenes(scenes: list[tuple[Identity, Style, Style, View]], image_size: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets and references of aligned pairs as (P, 3, S, S) in [-1, 1]: the same identity in
    the same view, in the target's and the reference's style."""
    return tuple(unit_range(x) for x in render_scenes_uint8(scenes, image_size))


def render_scenes_uint8(scenes: list[tuple[Identity, Style, Style, View]], image_size: int
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`render_scenes` as (P, 3, S, S) uint8: a quarter of the bytes, for process pools and
    the autoencoder's training images."""
    def stack(imgs: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()

    return (stack([render(ident, look, view, image_size) for ident, look, _, view in scenes]),
            stack([render(ident, own, view, image_size) for ident, _, own, view in scenes]))


def unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, S, S) -> float in [-1, 1], the same arithmetic as ``to_batch`` with mean = std = 0.5."""
    return (images.float().div_(255.0) - 0.5) / 0.5


def make_pairs(root: str | Path, item_ids: np.ndarray, vectors: np.ndarray, image_size: int,
               preference: PreferenceConfig | None = None, max_pairs: int | None = None, seed: int = 0,
               style_pairs: float = 0.0, style_columns: tuple[str, ...] | list[str] = ("palette", "pattern", "finish"),
               render_images: bool = True) -> GeneratorPairs:
    """One pair per positive event whose identity exists in another style (see module doc).

    On a world (``world.json``: :func:`recsys.world.build.world_scenes`) target and reference are
    rendered aligned, in a camera drawn for the pair as the world draws its views: the generator
    learns to keep what the reference shows and restyle it. Elsewhere the target is one of the
    clicked item's images and the reference its sibling's first image.

    ``style_pairs``: that share of pairs (drawn with ``seed``) takes as preference the mean of one
    to three items of other identities sharing one style (``style_columns`` of the catalog) instead
    of the user's history. A history predicts the clicked item's style only loosely, so on task
    pairs alone the adapter learns to pass little style through the preference tokens; style pairs
    make "the preference says how it looks, the reference says what it is" an exact target. On a
    world that style is drawn from the whole catalog and the target rendered in it, so every
    identity is seen in styles its catalog items lack (the user's ideal style usually is one).
    Inference is unchanged: the preference is still the retrieval-weighted history.

    ``render_images=False`` (a world only) returns the pairs' ``scenes`` instead of their images:
    what a GPU machine renders itself at any size (:mod:`ragar.generation.portable`), since 30,000
    pairs of 128-px images are 3 GB and their scenes a few MB. The draws are the same either way."""
    import polars as pl

    from ragar.encoders.base import load_rgb, to_batch
    from recsys.history import build_histories, requests_at
    from recsys.world.build import draw_view, world_scenes

    root = Path(root)
    rng = np.random.default_rng(seed)
    items = pl.read_parquet(root / "items.parquet")
    views = pl.read_parquet(root / "views.parquet").filter(pl.col("kind") == "view") \
        if (root / "views.parquet").exists() else items.select("item_id", "image")
    inter = pl.read_parquet(root / "interactions.parquet")
    pos = (inter.filter(pl.col("event_type").is_in(["click", "like"]))
           .unique(["user_id", "item_id"], keep="last", maintain_order=True))  # a fixed pair order: resumable
    if max_pairs and pos.height > max_pairs:
        pos = pos[np.sort(rng.choice(pos.height, max_pairs, replace=False)).tolist()]
    by_identity = items.group_by("identity_id").agg(pl.col("item_id"))
    siblings = dict(zip(by_identity["identity_id"], by_identity["item_id"], strict=True))
    identity = dict(zip(items["item_id"], items["identity_id"], strict=True))
    view_paths = views.group_by("item_id").agg(pl.col("image"))
    view_of = dict(zip(view_paths["item_id"], view_paths["image"], strict=True))
    rows = []
    for u, t, ts in pos.select("user_id", "item_id", "timestamp").iter_rows():
        others = [i for i in siblings[identity[t]] if i != t]
        if others:
            rows.append((u, t, others[int(rng.integers(len(others)))], ts))
    if not rows:
        raise ValueError(f"{root}: no positive event has an identity in another style to use as reference")
    index = {k: i for i, k in enumerate(item_ids)}
    users, targets, refs, times = map(list, zip(*rows, strict=True))
    hist = build_histories(inter, requests_at(users, times), index)
    r = torch.from_numpy(vectors[[index[x] for x in refs]])
    pref = weigh_histories(hist, vectors, r, preference or PreferenceConfig()).embedding
    scenes = world_scenes(root)
    style, style_item = None, [None] * len(targets)
    if style_pairs > 0:
        pref, style, style_item = _style_preferences(items, targets, index, vectors, pref, style_pairs,
                                                     list(style_columns), rng, any_style=scenes is not None)
    first = dict(zip(items["item_id"], items["image"], strict=True))
    if scenes is None:
        if not render_images:
            raise ValueError(f"{root} is not a world (no world.json): only a world's pairs can be rendered elsewhere")
        mean = std = (0.5, 0.5, 0.5)  # -> [-1, 1]
        imgs = [load_rgb(root / view_of[t][int(rng.integers(len(view_of[t])))]) for t in targets]
        ref_imgs = [load_rgb(root / first[x]) for x in refs]
        return GeneratorPairs(to_batch(imgs, image_size, mean, std), r, pref, users, times, targets, refs, style,
                              to_batch(ref_imgs, image_size, mean, std))
    plan = []
    for t, x, look in zip(targets, refs, style_item, strict=True):
        ident, own_style, _ = scenes[first[t]]
        plan.append((ident, scenes[first[look or t]][1] if look else own_style, scenes[first[x]][1], draw_view(rng)))
    if not render_images:
        return GeneratorPairs(None, r, pref, users, times, targets, refs, style, scenes=plan)
    x0, ref_x = render_scenes(plan, image_size)
    return GeneratorPairs(x0, r, pref, users, times, targets, refs, style, ref_x, scenes=plan)


def _style_preferences(items: pl.DataFrame, targets: list[str], index: dict[str, int], vectors: np.ndarray,
                       pref: torch.Tensor, share: float, columns: list[str], rng: np.random.Generator,
                       any_style: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[str | None]]:
    """Replace ``share`` of the preference rows by same-style items of other identities
    (make_pairs): the target's own style, or with ``any_style`` one drawn from the catalog's styles.
    Returns the preferences, which rows changed, and per row an item in the style the target must
    take (``None``: its own)."""
    import polars as pl

    missing = [c for c in columns if c not in items.columns]
    if missing:
        raise ValueError(f"generator.style_columns {missing} are not columns of items.parquet "
                         f"(it has {items.columns})")
    keys = items.select(pl.concat_str([pl.col(c).cast(pl.Utf8) for c in columns], separator="|"))
    keys = keys.to_series().to_list()
    ids, ident = items["item_id"].to_list(), items["identity_id"].to_list()
    by_style: dict[str, list[int]] = {}  # item rows with an embedding, by style
    for i, (k, item) in enumerate(zip(keys, ids, strict=True)):
        if item in index:
            by_style.setdefault(k, []).append(i)
    styles = sorted(by_style)
    row_of = {x: i for i, x in enumerate(ids)}
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    out, chosen = pref.clone(), torch.zeros(len(targets), dtype=torch.bool)
    look: list[str | None] = [None] * len(targets)
    for j in np.flatnonzero(rng.random(len(targets)) < share):
        t = row_of[targets[j]]
        key = styles[int(rng.integers(len(styles)))] if any_style else keys[t]
        pool = [i for i in by_style.get(key, []) if ident[i] != ident[t]]
        if not pool:
            continue  # a style no other identity has: the pair keeps its history preference
        pick = rng.choice(pool, size=min(len(pool), int(rng.integers(1, 4))), replace=False)
        out[j] = torch.from_numpy(unit[[index[ids[i]] for i in pick]].mean(0))
        chosen[j] = True
        look[j] = ids[pick[0]] if any_style else None
    return out, chosen, look
