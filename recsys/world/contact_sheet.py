"""Contact sheet: identities, their views and their near-identity distractors side by side, so a
person can see at a glance that the distractors are hard (same style, pose and background)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from PIL import Image, ImageDraw

from recsys.data.images import load_rgb


def contact_sheet(root: str | Path, n_rows: int = 8, cell: int = 64) -> Image.Image:
    """One row per item (one item per category first): its views, then each distractor next to the
    view it was made from (outlined in red)."""
    root = Path(root)
    views = pl.read_parquet(root / "views.parquet")
    items = views.filter(pl.col("kind") == "view").group_by("category", maintain_order=True).agg(
        pl.col("item_id").first())
    chosen = items["item_id"].to_list()[:n_rows]
    rows = []
    for item_id in chosen:
        v = views.filter((pl.col("item_id") == item_id) & (pl.col("kind") == "view")).sort("view_id")
        d = views.filter((pl.col("item_id") == item_id) & (pl.col("kind") == "distractor"))
        cells = [(r["image"], None) for r in v.iter_rows(named=True)]
        for r in d.iter_rows(named=True):
            src = views.filter(pl.col("view_id") == r["source_view_id"])["image"][0]
            cells += [(src, "src"), (r["image"], r["changed_part"])]
        rows.append((item_id, cells))
    width = max(len(c) for _, c in rows) * (cell + 4) + 150
    sheet = Image.new("RGB", (width, len(rows) * (cell + 18) + 24), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 4), "views | source view + near-identity distractor (changed part below)", fill=(0, 0, 0))
    for ri, (item_id, cells) in enumerate(rows):
        y = 24 + ri * (cell + 18)
        draw.text((4, y + cell // 2), item_id, fill=(0, 0, 0))
        for ci, (rel, tag) in enumerate(cells):
            x = 150 + ci * (cell + 4)
            im = Image.fromarray(load_rgb(root / rel, size=cell, resample=Image.NEAREST))
            sheet.paste(im, (x, y))
            if tag and tag != "src":
                draw.rectangle([x - 1, y - 1, x + cell, y + cell], outline=(220, 0, 0))
                draw.text((x, y + cell + 2), tag, fill=(220, 0, 0))
    return sheet
