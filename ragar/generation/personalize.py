"""Personalized generation end to end: history -> preference embedding -> N candidates -> best-of-N.

:class:`Personalizer` is what the CLI, the evaluation and the API call. For each request (a user
and a reference, given as a catalog item or an uploaded image) it

1. builds the user's history from the log and weights it against the reference with the chosen
   method (RAGAR or a baseline, :mod:`recsys.preference`), keeping the weights for display;
2. generates N candidates per request, every request of the call in **one** batched pipeline call;
3. scores each candidate for preference fit (the ranker's click probability for this user) and for
   consistency (cosine to the reference in an identity encoder's space), and picks the best by
   ``tradeoff * fit + (1 - tradeoff) * consistency`` after min-max scaling each within the request
   (the two live on different scales; scaling within the request makes the trade-off a share).

Fallbacks are explicit and reported per request: an unknown user or one with no usable history is
conditioned on the reference alone (``fallback="unknown-user"`` / ``"empty-history"``); an unknown
item is an error. An uploaded reference has no title, so the text half of its embedding is taken
from its nearest catalog item by image (``reference_source`` names it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import torch
from PIL import Image

from ragar.encoders.base import ImageEncoder, ImageLike, load_rgb
from ragar.encoders.catalog import CatalogEmbeddings, combine
from ragar.generation.configs import GenerationConfig
from ragar.generation.selection import select
from recsys.history import HistoryBatch, build_histories, requests_at
from recsys.preference import PreferenceConfig, weigh_histories


@dataclass
class Candidate:
    image: np.ndarray            # (H, W, 3) uint8
    preference_fit: float        # ranker click probability for this user (nan without a ranker)
    identity: float              # cosine to the reference in the identity encoder's space
    selection: float             # the trade-off score best-of-N ranks by
    embedding: np.ndarray | None = None  # in the image encoder's (ranker's) space, when it was computed


@dataclass
class HistoryWeight:
    item_id: str
    weight: float
    similarity: float
    event_type: str


@dataclass
class PersonalizedResult:
    user_id: str
    reference_item_id: str | None
    reference_source: str          # "catalog" or "upload (text from <nearest item>)"
    method: str
    candidates: list[Candidate]
    chosen: int
    history: list[HistoryWeight]   # heaviest first
    fallback: str | None
    cold_start_ranker: bool
    seed: int
    timings: dict = field(default_factory=dict)

    @property
    def best(self) -> Candidate:
        return self.candidates[self.chosen]


class Personalizer:
    """Holds the catalog, the log and the models; ``__call__`` serves a batch of requests."""

    def __init__(self, pipeline, catalog: CatalogEmbeddings, interactions: pl.DataFrame, image_encoder: ImageEncoder,
                 text_weight: float, preference: PreferenceConfig | None = None, scorer=None,
                 identity_encoder: ImageEncoder | None = None, reference_images: dict[str, str] | None = None,
                 config: GenerationConfig | None = None):
        self.pipeline = pipeline
        self.catalog = catalog
        self.interactions = interactions
        self.image_encoder = image_encoder
        self.identity_encoder = identity_encoder or image_encoder
        self.text_weight = text_weight
        self.preference = preference or PreferenceConfig()
        self.scorer = scorer
        self.reference_images = reference_images or {}
        self.config = config or GenerationConfig()
        self.vectors = catalog.combined(text_weight)
        self.positions = {k: i for i, k in enumerate(catalog.ids)}
        self.known_users = set(interactions["user_id"].unique().to_list())
        end = interactions["timestamp"].max()
        self.as_of = end + timedelta(microseconds=1) if end is not None else datetime.now()
        self._identity_cache: dict[str, np.ndarray] = {}
        self._pixel_cache: dict[str, np.ndarray] = {}

    #: catalog references kept decoded at the generator's size (an LRU would not pay for itself:
    #: a 64-px reference is 12 KB)
    PIXEL_CACHE = 8192

    # --- references -------------------------------------------------------------------------

    def reference_vectors(self, item_ids: list[str | None], images: list[ImageLike | None]
                           ) -> tuple[np.ndarray, list[str], list[np.ndarray | None]]:
        """Embedding, source and pixels of each reference: a catalog item's cached vector, or an
        image embedded now (with the text of its nearest catalog item). The API's preference view
        and the generation path share it, so both see the same reference."""
        vecs, sources, pixels = [], [], []
        for item, img in zip(item_ids, images, strict=True):
            if item is not None:
                if item not in self.positions:
                    raise KeyError(f"unknown item {item!r}: not in the catalog")
                vecs.append(self.vectors[self.positions[item]])
                sources.append("catalog")
                pixels.append(None)
                continue
            if img is None:
                raise ValueError("each request needs a reference_item_id or a reference image")
            rgb = load_rgb(img)  # raises ImageInputError on a non-image, oversized or NaN input
            v = self.image_encoder.encode([rgb])[0]
            nearest = int(np.argmax(self.catalog.image @ v))
            if self.catalog.text is None or self.text_weight == 0:
                vecs.append(v.astype(np.float32))
            else:
                vecs.append(combine(v[None], self.catalog.text[nearest][None], self.text_weight)[0])
            sources.append(f"upload (text from {self.catalog.ids[nearest]})")
            pixels.append(rgb)
        return np.stack(vecs).astype(np.float32), sources, pixels

    def reference_pixels(self, item_ids: list[str | None], pixels: list[np.ndarray | None]) -> list[np.ndarray]:
        """Each reference's image for a generator that renders it: an upload's decoded pixels, or
        the catalog item's image (``reference_images``), decoded once at the generator's size."""
        size = getattr(self.pipeline, "image_size", None)
        out = []
        for item, px in zip(item_ids, pixels, strict=True):
            if px is not None:
                out.append(px)
                continue
            if item not in self._pixel_cache:
                path = self.reference_images.get(item)
                if path is None:
                    raise KeyError(f"no image known for reference item {item!r}")
                if len(self._pixel_cache) >= self.PIXEL_CACHE:
                    self._pixel_cache.pop(next(iter(self._pixel_cache)))
                self._pixel_cache[item] = load_rgb(path, size=size, resample=Image.BICUBIC)
            out.append(self._pixel_cache[item])
        return out

    def histories(self, user_ids: list[str], as_of: datetime | list[datetime] | None = None) -> HistoryBatch:
        """Each request's history, built once: the log strictly before ``as_of`` (default: the
        whole log), as long as the longest consumer needs (the preference keeps the newest
        ``history_len``, the ranker its own ``max_len``; :meth:`HistoryBatch.tail` cuts each)."""
        reqs = requests_at(list(user_ids), self.as_of if as_of is None else as_of)
        longest = max(self.config.history_len, getattr(self.scorer, "max_len", 0))
        return build_histories(self.interactions, reqs, self.positions, longest)

    def preference_embeddings(self, user_ids: list[str], reference: np.ndarray, method: str,
                              as_of: datetime | list[datetime] | None = None, history: HistoryBatch | None = None):
        """(B, D) preference embeddings, the per-request history weights, and fallback reasons.
        ``history``: the requests' histories when the caller already built them (:meth:`histories`)."""
        hist = (self.histories(user_ids, as_of) if history is None else history).tail(self.config.history_len)
        res = weigh_histories(hist, self.vectors, torch.from_numpy(reference), self.preference, method)
        weights = []
        for b in range(len(user_ids)):
            n = len(hist.item_ids[b])
            w, s = res.weights[b, :n].numpy(), res.similarity[b, :n].numpy()
            order = np.argsort(-w, kind="stable")
            weights.append([HistoryWeight(hist.item_ids[b][i], float(w[i]), float(s[i]), hist.event_types[b][i])
                            for i in order])
        fallback = ["unknown-user" if u not in self.known_users else f for u, f in
                    zip(user_ids, res.fallback, strict=True)]
        return res.embedding.numpy().astype(np.float32), weights, fallback

    # --- scoring ------------------------------------------------------------------------------

    def _identity_of_reference(self, item: str | None, pixels: np.ndarray | None) -> np.ndarray:
        if item is None:
            return self.identity_encoder.encode([pixels])[0]
        if item not in self._identity_cache:
            path = self.reference_images.get(item)
            if path is None:
                raise KeyError(f"no image known for reference item {item!r}")
            self._identity_cache[item] = self.identity_encoder.encode([path])[0]
        return self._identity_cache[item]

    def score(self, user_ids: list[str], images: np.ndarray, n: int, ref_items: list[str | None],
              ref_pixels: list[np.ndarray | None], as_of: datetime | list[datetime] | None = None,
              history: HistoryBatch | None = None) -> tuple[np.ndarray, np.ndarray, list[bool], np.ndarray | None]:
        """Preference fit (B, n), identity (B, n), cold-start flags and the image-encoder
        embeddings (B, n, D) of ``images`` ((B * n), H, W, 3); each encoder runs once, and the
        ranker reads ``history`` (built by :meth:`histories` for the same ``as_of``) when given."""
        b = len(user_ids)
        ident = self.identity_encoder.encode(list(images)).reshape(b, n, -1)
        emb = ident if self.identity_encoder is self.image_encoder else None
        refs = np.stack([self._identity_of_reference(i, p) for i, p in zip(ref_items, ref_pixels, strict=True)])
        identity = np.einsum("bnd,bd->bn", ident, refs) / (
            np.linalg.norm(ident, axis=-1) * np.linalg.norm(refs, axis=-1)[:, None] + 1e-12)
        if self.scorer is None:
            return np.full((b, n), np.nan), identity, [False] * b, emb
        if emb is None:
            emb = self.image_encoder.encode(list(images)).reshape(b, n, -1)
        res = self.scorer.score(list(user_ids), emb, as_of=self.as_of if as_of is None else as_of, history=history)
        return res.probabilities, identity, res.cold_start, emb

    select = staticmethod(select)  # best-of-N (ragar.generation.selection; see the module doc)

    # --- the call -------------------------------------------------------------------------------

    def __call__(self, user_ids: str | list[str], reference_item_ids: str | list[str | None] | None = None,
                 reference_images: ImageLike | list[ImageLike | None] | None = None, *, n: int | None = None,
                 method: str | None = None, seed: int | list[int] = 0, tradeoff: float | None = None,
                 num_inference_steps: int | None = None, reference_guidance_scale: float | None = None,
                 preference_guidance_scale: float | None = None, score: bool = True,
                 as_of: datetime | list[datetime] | None = None,
                 preference_embeds: np.ndarray | None = None) -> list[PersonalizedResult]:
        """``as_of`` replays requests in the past: history and ranker inputs use only earlier events.
        ``preference_embeds`` (B, D) conditions on these instead of weighting the history (the
        evaluation's oracle row); the results then carry no history weights."""
        cfg = self.config
        users = [user_ids] if isinstance(user_ids, str) else list(user_ids)
        b = len(users)
        items = reference_item_ids if isinstance(reference_item_ids, list) else [reference_item_ids] * b
        imgs = reference_images if isinstance(reference_images, list) else [reference_images] * b
        seeds = seed if isinstance(seed, list) else [seed] * b
        if not (len(items) == len(imgs) == len(seeds) == b):
            raise ValueError("user_ids, references and seeds must have the same length")
        n = cfg.n if n is None else n
        if not 1 <= n <= cfg.max_n:
            raise ValueError(f"n must be between 1 and {cfg.max_n} (the configured cap), got {n}")
        method = method or cfg.method
        t0 = time.perf_counter()
        ref, sources, pixels = self.reference_vectors(items, imgs)
        hist = self.histories(users, as_of) if preference_embeds is None or (score and self.scorer) else None
        if preference_embeds is None:
            pref, weights, fallback = self.preference_embeddings(users, ref, method, as_of, hist)
        else:
            pref = np.asarray(preference_embeds, dtype=np.float32)
            if pref.shape != ref.shape:
                raise ValueError(f"preference_embeds must be {ref.shape}, got {pref.shape}")
            weights, fallback = [[] for _ in users], [None] * b
        t1 = time.perf_counter()
        # image j of a request uses seed (seed * 1009 + j): independent of batching and batch position
        # drawn on the generator's device: a seed gives the same images on the same device
        device = getattr(self.pipeline, "device", "cpu")
        gens = [torch.Generator(device=device).manual_seed(s * 1009 + j) for s in seeds for j in range(n)]
        image = self.reference_pixels(items, pixels) if getattr(self.pipeline, "conditions_on_image", False) else None
        out = self.pipeline(reference_embeds=torch.from_numpy(ref), preference_embeds=torch.from_numpy(pref),
                            image=image, num_images_per_request=n, generator=gens,
                            num_inference_steps=num_inference_steps or cfg.num_inference_steps,
                            reference_guidance_scale=cfg.reference_guidance_scale if reference_guidance_scale is None
                            else reference_guidance_scale,
                            preference_guidance_scale=cfg.preference_guidance_scale
                            if preference_guidance_scale is None else preference_guidance_scale)
        images = out.images
        t2 = time.perf_counter()
        if score:
            fit, identity, cold, emb = self.score(users, images, n, items, pixels, as_of, hist)
        else:
            fit, identity, cold, emb = np.full((b, n), np.nan), np.full((b, n), np.nan), [False] * b, None
        sel, chosen = self.select(fit, identity, cfg.tradeoff if tradeoff is None else tradeoff)
        t3 = time.perf_counter()
        timings = {"retrieval_s": t1 - t0, "generation_s": t2 - t1, "scoring_s": t3 - t2, "requests": b, "n": n}
        results = []
        for i in range(b):
            cands = [Candidate(images[i * n + j], float(fit[i, j]), float(identity[i, j]), float(sel[i, j]),
                               None if emb is None else emb[i, j]) for j in range(n)]
            results.append(PersonalizedResult(users[i], items[i], sources[i], method, cands, int(chosen[i]),
                                              weights[i], fallback[i], bool(cold[i]), seeds[i], timings))
        return results
