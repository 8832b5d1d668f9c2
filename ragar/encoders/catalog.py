"""Embed a catalog once and cache it, keyed by item id and encoder fingerprint.

Image and text embeddings are cached separately (``<root>/.ragar_cache/{image,text}-<fp>-<ids>.npy``
with the item ids beside them), so a changed encoder invalidates exactly its own cache and the
image part stays available alone for generated images, which have no title. ``<ids>`` hashes the
item set: two sets embedded under one root (the catalog, and the other views the ranker's oracle
check scores) keep a file each. With one file per encoder they overwrote each other, and
``ragar demo`` embedded its catalog twice (39 s of its 10-minute budget).

The multimodal item vector is ``[sqrt(1-a) * image, sqrt(a) * text]``: unit-norm by construction,
and its cosine is the ``a``-weighted mix of image and text cosines.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from ragar.encoders.base import ImageEncoder, TextEncoder

CACHE_DIR = ".ragar_cache"


@dataclass
class CatalogEmbeddings:
    ids: np.ndarray             # (N,) item ids, in the order of the vectors
    image: np.ndarray           # (N, Di) unit-norm
    text: np.ndarray | None     # (N, Dt) unit-norm, or None without a text encoder
    fingerprint: str

    def combined(self, text_weight: float) -> np.ndarray:
        if self.text is None or text_weight == 0:
            return self.image
        return combine(self.image, self.text, text_weight)

    def lookup(self, item_ids) -> np.ndarray:
        """Row positions of ``item_ids``; raises KeyError naming the unknown ones."""
        pos = {k: i for i, k in enumerate(self.ids)}
        missing = [i for i in item_ids if i not in pos]
        if missing:
            raise KeyError(f"unknown items {missing[:5]}")
        return np.asarray([pos[i] for i in item_ids], dtype=np.int64)


def combine(image: np.ndarray, text: np.ndarray, text_weight: float) -> np.ndarray:
    return np.concatenate([np.sqrt(1 - text_weight) * image, np.sqrt(text_weight) * text], axis=1
                          ).astype(np.float32)


def _ids_key(ids: np.ndarray) -> str:
    """A short digest of the item ids, in order (the cached rows follow that order)."""
    return hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest()[:12]


def _cached(root: Path, kind: str, fp: str, ids: np.ndarray, compute) -> np.ndarray:
    cache = root / CACHE_DIR
    key = f"{kind}-{fp}-{_ids_key(ids)}"
    vec_path, id_path = cache / f"{key}.npy", cache / f"{key}.ids.parquet"
    if vec_path.exists() and id_path.exists():
        cached_ids = pl.read_parquet(id_path)["item_id"].to_numpy()
        if len(cached_ids) == len(ids) and (cached_ids == ids).all():
            return np.load(vec_path, allow_pickle=False)
    vec = compute()
    cache.mkdir(parents=True, exist_ok=True)
    # temporary names of this process's own, then atomic renames: a crash never leaves a half-written
    # cache, and processes of one `accelerate launch` filling the same cache never trip over each other
    tag = f"{os.getpid()}.tmp"
    tmp_vec, tmp_ids = vec_path.with_suffix(f".{tag}.npy"), id_path.with_suffix(f".{tag}.parquet")
    np.save(tmp_vec, vec)
    pl.DataFrame({"item_id": ids}).write_parquet(tmp_ids)
    os.replace(tmp_ids, id_path)
    os.replace(tmp_vec, vec_path)
    return vec


def embed_catalog(root: str | Path, image_encoder: ImageEncoder, text_encoder: TextEncoder | None,
                  items: pl.DataFrame | None = None, batch_size: int = 64, progress: bool = True
                  ) -> CatalogEmbeddings:
    root = Path(root)
    if items is None:
        items = pl.read_parquet(root / "items.parquet")
    ids = items["item_id"].to_numpy().astype(str)
    paths = [str(root / p) for p in items["image"].to_list()]
    img = _cached(root, "image", image_encoder.fingerprint, ids,
                  lambda: image_encoder.encode(paths, batch_size=batch_size, progress=progress))
    txt = None
    fp = image_encoder.fingerprint
    if text_encoder is not None:
        titles = items["title"].to_list()
        txt = _cached(root, "text", text_encoder.fingerprint, ids,
                      lambda: text_encoder.encode(titles, batch_size=batch_size, progress=progress))
        fp = f"{fp}+{text_encoder.fingerprint}"
    return CatalogEmbeddings(ids, img, txt, fp)
