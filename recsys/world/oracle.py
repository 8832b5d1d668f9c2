"""Read access to a built world and its oracle (the ground truth real logs never give)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl

from recsys.data.io import read_table, scan_interactions


@dataclass
class Oracle:
    """Each user's category-conditional utility for any style, and the true attributes of items."""

    palette: np.ndarray
    pattern: np.ndarray
    finish: np.ndarray
    interest: np.ndarray
    categories: list[str]

    @classmethod
    def load(cls, root: str | Path) -> Oracle:
        root = Path(root)
        manifest = json.loads((root / "world.json").read_text())
        with np.load(root / "oracle.npz", allow_pickle=False) as z:
            return cls(z["palette"], z["pattern"], z["finish"], z["interest"],
                       list(manifest["vocab"]["categories"]))

    @property
    def n_users(self) -> int:
        return self.palette.shape[0]

    def category_index(self, category) -> np.ndarray:
        lut = {c: i for i, c in enumerate(self.categories)}
        return np.asarray([lut[c] for c in np.atleast_1d(category)])

    def utility(self, user_idx, cat_idx, palette, pattern, finish) -> np.ndarray:
        """Utility of (user, category, style) triples; arguments broadcast as numpy arrays."""
        u, c = np.asarray(user_idx), np.asarray(cat_idx)
        return (self.palette[u, c, np.asarray(palette)] + self.pattern[u, c, np.asarray(pattern)]
                + self.finish[u, c, np.asarray(finish)])

    def ideal_style(self, user_idx, cat_idx) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        u, c = np.asarray(user_idx), np.asarray(cat_idx)
        return (self.palette[u, c].argmax(-1), self.pattern[u, c].argmax(-1), self.finish[u, c].argmax(-1))


def user_index(user_ids) -> np.ndarray:
    """World user ids are ``u%06d``: the index is the number (raises on a foreign id)."""
    out = []
    for u in np.atleast_1d(user_ids):
        s = str(u)
        if not (s.startswith("u") and s[1:].isdigit()):
            raise KeyError(f"unknown user {s!r}: not a world user id")
        out.append(int(s[1:]))
    return np.asarray(out, dtype=np.int64)


class World:
    """A built world directory: tables, oracle and manifest, loaded lazily."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not (self.root / "world.json").exists():
            raise FileNotFoundError(f"{self.root} is not a world (no world.json); build one with "
                                    "`ragar world build`")
        self.manifest = json.loads((self.root / "world.json").read_text())

    @cached_property
    def items(self) -> pl.DataFrame:
        return read_table(self.root, "items")

    @cached_property
    def views(self) -> pl.DataFrame:
        return pl.read_parquet(self.root / "views.parquet")

    @cached_property
    def users(self) -> pl.DataFrame:
        return read_table(self.root, "users")

    def interactions(self) -> pl.LazyFrame:
        return scan_interactions(self.root)

    @cached_property
    def oracle(self) -> Oracle:
        return Oracle.load(self.root)

    def item_utility(self, user_ids, item_ids) -> np.ndarray:
        """Oracle utility of each (user, catalog item) pair."""
        items = self.items.select("item_id", "category", "palette", "pattern", "finish")
        idx = pl.DataFrame({"item_id": np.atleast_1d(item_ids).astype(str)}).join(
            items, on="item_id", how="left", maintain_order="left")
        if idx["category"].null_count():
            missing = idx.filter(pl.col("category").is_null())["item_id"].to_list()[:5]
            raise KeyError(f"unknown items {missing}")
        o = self.oracle
        return o.utility(user_index(user_ids), o.category_index(idx["category"].to_numpy()),
                         idx["palette"].to_numpy(), idx["pattern"].to_numpy(), idx["finish"].to_numpy())

    def ideal_items(self, user_ids, categories) -> np.ndarray:
        """For each (user, category): the catalog item of that category with the highest utility."""
        items = self.items
        o = self.oracle
        out = []
        cat_arr = items["category"].to_numpy()
        pal, pat, fin = (items[c].to_numpy() for c in ("palette", "pattern", "finish"))
        ids = items["item_id"].to_numpy()
        for u, c in zip(user_index(user_ids), np.atleast_1d(categories), strict=True):
            m = np.flatnonzero(cat_arr == c)
            ci = o.category_index([c])[0]
            out.append(ids[m[np.argmax(o.utility(u, ci, pal[m], pat[m], fin[m]))]])
        return np.asarray(out)
