"""Build the embedded synthetic world: catalog, renders, distractors, users, logs and the oracle.

Output directory (a dataset in the contract of :mod:`recsys.data.schema`, plus the oracle)::

    items.parquet         one row per item (identity x style); image = its first view
    views.parquet         every render: the item views and the near-identity distractors
    users.parquet         user ids and their favourite category
    interactions.parquet  impressions, clicks and likes with request ids and positions
    oracle.npz            each user's category-conditional style utilities (arrays only)
    world.json            the config, the vocabularies and counts
    images/<category>/<view_id>.png

Everything is drawn from one ``numpy.random.Generator`` per stage seeded from the config seed,
so the same config gives byte-identical tables and images.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm.auto import tqdm

from recsys.data.schema import INTERACTIONS_SCHEMA, conform
from recsys.world.config import WorldConfig
from recsys.world.render import (
    BACKGROUNDS,
    CATEGORIES,
    FINISHES,
    PALETTES,
    PART_PHRASES,
    PATTERNS,
    Identity,
    Style,
    View,
    render,
)

N_STYLES = len(PALETTES) * len(PATTERNS) * len(FINISHES)


def style_of(code: int) -> Style:
    """Style code <-> (palette, pattern, finish): code = (palette * n_pattern + pattern) * n_finish + finish."""
    finish = code % len(FINISHES)
    pattern = (code // len(FINISHES)) % len(PATTERNS)
    palette = code // (len(FINISHES) * len(PATTERNS))
    return Style(palette, pattern, finish)


def style_code(palette: int, pattern: int, finish: int) -> int:
    return (palette * len(PATTERNS) + pattern) * len(FINISHES) + finish


def title_of(ident: Identity, style: Style) -> str:
    size = []
    if ident.height > 0.66:
        size.append("tall")
    if ident.width > 0.66:
        size.append("wide")
    words = [FINISHES[style.finish], *size, PALETTES[style.palette][0]]
    if style.pattern:
        words.append(PATTERNS[style.pattern])
    parts = [PART_PHRASES[ident.category][p][v] for p, v in ident.parts]
    return f"{' '.join(words).capitalize()} {ident.category} with {' and '.join(parts)}"


def draw_view(rng: np.random.Generator) -> View:
    """A camera drawn as the world draws its item views (the generator's training pairs draw more)."""
    return View(angle=float(rng.uniform(-18, 18)), scale=float(rng.uniform(0.72, 0.95)),
                offset=float(rng.uniform(-0.1, 0.1)), background=int(rng.integers(len(BACKGROUNDS))),
                light=float(rng.uniform(-1, 1)))


def world_scenes(root: str | Path) -> dict[str, tuple[Identity, Style, View]] | None:
    """What each render of a built world shows, by image path (``images/<cat>/<view>.png``):
    rebuilt from ``world.json``'s config (the catalog is a pure function of it; nothing is
    rendered), so a view can be rendered again in another style or at another size. ``None`` when
    ``root`` is not a world (no ``world.json``)."""
    path = Path(root) / "world.json"
    if not path.exists():
        return None
    cfg = WorldConfig.model_validate(json.loads(path.read_text())["config"])
    return {rel: (ident, style, view) for rel, ident, style, view in _make_catalog(cfg).jobs}


@dataclass
class _Catalog:
    items: pl.DataFrame
    views: pl.DataFrame
    jobs: list[tuple[str, Identity, Style, View]]


def _make_catalog(cfg: WorldConfig) -> _Catalog:
    rng = np.random.default_rng([cfg.seed, 1])
    item_rows, view_rows, jobs = [], [], []
    for cat in cfg.categories:
        parts_spec = CATEGORIES[cat]
        for n in range(cfg.identities_per_category):
            identity_id = f"{cat}-{n:05d}"
            parts = tuple((p, int(rng.integers(k))) for p, k in parts_spec.items())
            ident = Identity(cat, float(rng.random()), float(rng.random()), parts)
            codes = rng.choice(N_STYLES, size=cfg.styles_per_identity, replace=False)
            for code in sorted(int(c) for c in codes):
                style = style_of(code)
                item_id = f"{identity_id}-s{code:02d}"
                attrs = {
                    "width": round(ident.width, 4), "height": round(ident.height, 4),
                    **{p: v for p, v in parts},
                    "palette": PALETTES[style.palette][0], "pattern": PATTERNS[style.pattern],
                    "finish": FINISHES[style.finish],
                }
                first_view = None
                for v in range(cfg.views_per_item):
                    view = draw_view(rng)
                    view_id = f"{item_id}-v{v}"
                    image = f"images/{cat}/{view_id}.png"
                    first_view = first_view or image
                    view_rows.append(_view_row(view_id, item_id, identity_id, cat, "view", None, None,
                                               image, view))
                    jobs.append((image, ident, style, view))
                    # near-identity distractors: one part changed, same style, background and pose
                    if v < cfg.distractors_per_item:
                        part = list(parts_spec)[int(rng.integers(len(parts_spec)))]
                        cur = ident.part(part)
                        new = (cur + 1 + int(rng.integers(parts_spec[part] - 1))) % parts_spec[part]
                        d_ident = ident.with_part(part, new)
                        d_id = f"{view_id}-d"
                        d_image = f"images/{cat}/{d_id}.png"
                        view_rows.append(_view_row(d_id, item_id, f"{identity_id}~{part}={new}", cat,
                                                   "distractor", view_id, part, d_image, view))
                        jobs.append((d_image, d_ident, style, view))
                item_rows.append({
                    "item_id": item_id, "title": title_of(ident, style), "category": cat,
                    "identity_id": identity_id, "image": first_view, "attributes": json.dumps(attrs),
                    "palette": style.palette, "pattern": style.pattern, "finish": style.finish,
                    "style_code": code,
                })
    items = conform(pl.DataFrame(item_rows), "items").with_columns(
        pl.col("palette", "pattern", "finish", "style_code").cast(pl.Int16))
    views = pl.DataFrame(view_rows)
    return _Catalog(items, views, jobs)


def _view_row(view_id, item_id, identity_id, cat, kind, source, part, image, view: View) -> dict:
    return {
        "view_id": view_id, "item_id": item_id, "identity_id": identity_id, "category": cat,
        "kind": kind, "source_view_id": source, "changed_part": part, "image": image,
        "angle": view.angle, "scale": view.scale, "background": view.background, "light": view.light,
    }


def _render_chunk(args: tuple[str, int, list[tuple[str, Identity, Style, View]]]) -> int:
    root, size, jobs = args
    for rel, ident, style, view in jobs:
        Image.fromarray(render(ident, style, view, size)).save(os.path.join(root, rel), optimize=False)
    return len(jobs)


def _render_all(out: Path, cfg: WorldConfig, jobs, progress: bool) -> None:
    for cat in cfg.categories:
        (out / "images" / cat).mkdir(parents=True, exist_ok=True)
    chunk = 512
    chunks = [(str(out), cfg.image_size, jobs[i:i + chunk]) for i in range(0, len(jobs), chunk)]
    bar = tqdm(total=len(jobs), desc="render", unit="img", disable=not progress)
    if cfg.workers > 1 and len(jobs) > 4 * chunk:
        with ProcessPoolExecutor(cfg.workers) as pool:
            for n in pool.map(_render_chunk, chunks):
                bar.update(n)
    else:
        for c in chunks:
            bar.update(_render_chunk(c))
    bar.close()


@dataclass
class Preferences:
    """The oracle's ground truth: category-conditional style utilities of every user."""

    palette: np.ndarray   # (U, C, n_palettes)
    pattern: np.ndarray   # (U, C, n_patterns)
    finish: np.ndarray    # (U, C, n_finishes)
    interest: np.ndarray  # (U, C) category interest (sums to 1)


def _make_preferences(cfg: WorldConfig) -> Preferences:
    rng = np.random.default_rng([cfg.seed, 2])
    u, c = cfg.n_users, len(cfg.categories)
    pal = rng.normal(0, 0.3, (u, c, len(PALETTES))).astype(np.float32)
    fav = rng.integers(len(PALETTES), size=(u, c))
    np.put_along_axis(pal, fav[..., None], np.take_along_axis(pal, fav[..., None], 2) + 2.0, 2)
    pat = rng.normal(0, 0.3, (u, c, len(PATTERNS))).astype(np.float32)
    favp = rng.integers(len(PATTERNS), size=(u, c))
    np.put_along_axis(pat, favp[..., None], np.take_along_axis(pat, favp[..., None], 2) + 1.0, 2)
    fin = rng.normal(0, 0.4, (u, c, len(FINISHES))).astype(np.float32)
    interest = rng.dirichlet(np.full(c, 0.6), size=u).astype(np.float32)
    return Preferences(pal, pat, fin, interest)


def _simulate(cfg: WorldConfig, items: pl.DataFrame, prefs: Preferences,
              progress: bool) -> Iterator[pa.Table]:
    """Yield interaction tables chunk by chunk of users (bounded memory for the large world)."""
    rng = np.random.default_rng([cfg.seed, 3])
    cat_index = {c: i for i, c in enumerate(cfg.categories)}
    item_cat = items["category"].replace_strict(cat_index, return_dtype=pl.Int64).to_numpy()
    item_pal = items["palette"].to_numpy().astype(np.int64)
    item_pat = items["pattern"].to_numpy().astype(np.int64)
    item_fin = items["finish"].to_numpy().astype(np.int64)
    item_ids = items["item_id"].to_numpy()
    by_cat = [np.flatnonzero(item_cat == k) for k in range(len(cfg.categories))]
    n_items = len(item_ids)
    start_us = int(cfg.start.timestamp() * 1e6)
    span_us = int(cfg.days * 86400e6)
    bar = tqdm(total=cfg.n_users, desc="simulate", unit="user", disable=not progress)
    n_in = round(cfg.slate_size * cfg.in_category_share)
    for lo in range(0, cfg.n_users, cfg.user_chunk):
        hi = min(cfg.n_users, lo + cfg.user_chunk)
        users = np.arange(lo, hi)
        n_req = rng.poisson(cfg.requests_per_user - 1, size=len(users)) + 1
        req_user = np.repeat(users, n_req)
        r = len(req_user)
        req_time = start_us + (rng.random(r) * span_us).astype(np.int64)
        # request category by the user's interest (inverse-CDF sampling, vectorised)
        cdf = np.cumsum(prefs.interest[req_user], axis=1)
        req_cat = np.minimum((rng.random(r)[:, None] > cdf).sum(1), len(cfg.categories) - 1)
        slate = np.empty((r, cfg.slate_size), np.int64)
        n_in_row = np.empty(r, np.int64)
        for k, pool in enumerate(by_cat):
            sel = np.flatnonzero(req_cat == k)
            if len(sel):
                m = min(n_in, len(pool))  # a tiny category cannot fill the in-category slots alone
                n_in_row[sel] = m
                slate[sel, :] = rng.integers(n_items, size=(len(sel), cfg.slate_size))
                slate[sel, :m] = pool[rng.integers(len(pool), size=(len(sel), m))]
        slate = _dedupe_slates(slate, n_in_row, req_cat, by_cat, n_items, rng)
        slate = np.take_along_axis(slate, rng.random(slate.shape).argsort(1), 1)  # shuffle slots
        uu = np.repeat(req_user, cfg.slate_size).reshape(r, -1)
        cc = item_cat[slate]
        util = (prefs.palette[uu, cc, item_pal[slate]] + prefs.pattern[uu, cc, item_pat[slate]]
                + prefs.finish[uu, cc, item_fin[slate]])
        pos = np.arange(cfg.slate_size)[None, :]
        examine = rng.random(slate.shape) < (1.0 / (pos + 1.0)) ** cfg.position_bias
        p_click = 1 / (1 + np.exp(-cfg.utility_sharpness * (util - cfg.click_threshold)))
        click = examine & (rng.random(slate.shape) < p_click)
        p_like = 1 / (1 + np.exp(-cfg.utility_sharpness * (util - cfg.like_threshold)))
        like = click & (rng.random(slate.shape) < p_like)
        req_ids = np.char.add("r", np.char.zfill((np.arange(r) + _req_offset(lo, cfg)).astype(str), 9))
        t_imp = np.repeat(req_time, cfg.slate_size).reshape(r, -1)
        t_click = t_imp + (pos + 1) * 2_000_000 + (rng.random(slate.shape) * 1e6).astype(np.int64)
        t_like = t_click + 5_000_000
        parts = []
        for mask, ts, ev in ((np.ones_like(click), t_imp, "impression"), (click, t_click, "click"),
                             (like, t_like, "like")):
            rr, ss = np.nonzero(mask)
            parts.append({
                "user_id": _user_ids(req_user[rr]), "item_id": item_ids[slate[rr, ss]],
                "timestamp": ts[rr, ss], "event_type": np.full(len(rr), ev),
                "request_id": req_ids[rr], "position": ss.astype(np.int32),
            })
        df = pl.DataFrame({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
        df = conform(df.with_columns(pl.col("timestamp").cast(pl.Datetime("us"))), "interactions")
        yield df.sort(["timestamp", "request_id", "position"]).to_arrow()
        bar.update(len(users))
    bar.close()


def _dedupe_slates(slate: np.ndarray, n_in: np.ndarray, req_cat: np.ndarray, by_cat: list[np.ndarray],
                   n_items: int, rng: np.random.Generator) -> np.ndarray:
    """Resample repeated items until no slate shows an item twice (a real slate never does).
    Slots below ``n_in`` redraw from the request's category, the rest from the whole catalog."""
    for _ in range(100):
        order = np.argsort(slate, axis=1, kind="stable")
        ordered = np.take_along_axis(slate, order, 1)
        dup_sorted = np.concatenate([np.zeros((len(slate), 1), bool), ordered[:, 1:] == ordered[:, :-1]], 1)
        dup = np.zeros_like(dup_sorted)
        np.put_along_axis(dup, order, dup_sorted, 1)
        if not dup.any():
            return slate
        rows, cols = np.nonzero(dup)
        in_cat = cols < n_in[rows]
        slate[rows[~in_cat], cols[~in_cat]] = rng.integers(n_items, size=int((~in_cat).sum()))
        for k, pool in enumerate(by_cat):
            m = in_cat & (req_cat[rows] == k)
            slate[rows[m], cols[m]] = pool[rng.integers(len(pool), size=int(m.sum()))]
    raise RuntimeError("could not draw slates without repeats: the catalog is smaller than a slate")


def _req_offset(lo: int, cfg: WorldConfig) -> int:
    # request ids are unique across chunks: chunk start x a bound on requests per user
    return lo * int(cfg.requests_per_user * 20 + 100)


def _user_ids(idx: np.ndarray) -> np.ndarray:
    return np.char.add("u", np.char.zfill(idx.astype(str), 6))


def build_world(cfg: WorldConfig, out: str | Path, progress: bool = True,
                log: Callable[[str], None] | None = None) -> dict:
    """Generate the world into ``out``; returns the manifest written to ``world.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cat = _make_catalog(cfg)
    cat.items.write_parquet(out / "items.parquet")
    cat.views.write_parquet(out / "views.parquet")
    _render_all(out, cfg, cat.jobs, progress)
    prefs = _make_preferences(cfg)
    np.savez(out / "oracle.npz", palette=prefs.palette, pattern=prefs.pattern, finish=prefs.finish,
             interest=prefs.interest)
    users = pl.DataFrame({
        "user_id": _user_ids(np.arange(cfg.n_users)),
        "favourite_category": np.asarray(cfg.categories)[prefs.interest.argmax(1)],
    })
    users.write_parquet(out / "users.parquet")
    n_rows = 0
    arrow_schema = pl.DataFrame(schema=INTERACTIONS_SCHEMA).to_arrow().schema
    with pq.ParquetWriter(out / "interactions.parquet", arrow_schema) as writer:
        for table in _simulate(cfg, cat.items, prefs, progress):
            writer.write_table(table.cast(arrow_schema))
            n_rows += table.num_rows
    manifest = {
        "kind": "ragar-world",
        "version": 1,
        "config": json.loads(cfg.model_dump_json()),
        "vocab": {
            "categories": cfg.categories,
            "palettes": [p[0] for p in PALETTES],
            "patterns": PATTERNS,
            "finishes": FINISHES,
            "backgrounds": [b[0] for b in BACKGROUNDS],
            "parts": {c: PART_PHRASES[c] for c in cfg.categories},
        },
        "counts": {
            "items": cat.items.height, "views": int((cat.views["kind"] == "view").sum()),
            "distractors": int((cat.views["kind"] == "distractor").sum()),
            "users": cfg.n_users, "interactions": n_rows,
        },
    }
    (out / "world.json").write_text(json.dumps(manifest, indent=2, default=str))
    return manifest
