"""The world's attribute reader: a small CNN that reads category, parts and style off any image.

This is how the oracle scores images nobody rendered (generated ones): read the attributes, then
ask the oracle for the user's utility of that style in that category. It is trained on every
render of the world (item views and near-identity distractors, so the part heads see parts that
differ by one attribute) at the generator's resolution, and reports its accuracy on held-out
identities so its reading can be trusted as far as it is measured.

Part heads: one linear layer holds the logits of every (category, part) variant; the loss and the
reading of an image use only the slices of its (true, resp. predicted) category.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn

from recsys.data.images import load_rgb
from recsys.modeling import PretrainedMixin
from recsys.world.render import CATEGORIES, FINISHES, PALETTES, PATTERNS

STYLE_HEADS = {"palette": len(PALETTES), "pattern": len(PATTERNS), "finish": len(FINISHES)}


def _part_slots(categories: list[str]) -> list[tuple[str, str, int, int]]:
    """(category, part, start, size) of every part head slice, in a fixed order."""
    slots, start = [], 0
    for c in categories:
        for p, k in CATEGORIES[c].items():
            slots.append((c, p, start, k))
            start += k
    return slots


@dataclass
class AttributeReaderConfig:
    image_size: int = 32
    width: int = 48
    categories: tuple[str, ...] = field(default_factory=lambda: tuple(CATEGORIES))


class AttributeReader(PretrainedMixin, nn.Module):
    config_class = AttributeReaderConfig
    model_type = "attribute-reader"

    def __init__(self, config: AttributeReaderConfig):
        super().__init__()
        self.config = config
        w = config.width

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(),
                                 nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

        self.body = nn.Sequential(block(3, w), block(w, 2 * w), block(2 * w, 4 * w),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.slots = _part_slots(list(config.categories))
        self.heads = nn.ModuleDict({"category": nn.Linear(4 * w, len(config.categories)),
                                    **{k: nn.Linear(4 * w, n) for k, n in STYLE_HEADS.items()},
                                    "parts": nn.Linear(4 * w, sum(s[3] for s in self.slots))})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``images``: (B, 3, S, S) in [-1, 1] -> logits per head (and ``features``)."""
        f = self.body(images)
        return {"features": f, **{k: h(f) for k, h in self.heads.items()}}

    def part_loss(self, part_logits: torch.Tensor, category: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
        """``parts``: (B, max_parts) true variant per part of the image's category."""
        losses = []
        for ci, c in enumerate(self.config.categories):
            rows = category == ci
            if not rows.any():
                continue
            for j, (_, _, start, k) in enumerate(s for s in self.slots if s[0] == c):
                losses.append(nn.functional.cross_entropy(part_logits[rows, start:start + k], parts[rows, j],
                                                          reduction="sum"))
        return torch.stack(losses).sum() / len(category)

    @torch.no_grad()
    def read(self, images: torch.Tensor, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Predicted category index, style indices and part variants (B, max_parts; -1 unused)."""
        self.eval()
        outs: dict[str, list] = {k: [] for k in ["category", *STYLE_HEADS, "parts"]}
        probs: dict[str, list] = {k: [] for k in STYLE_HEADS}
        for i in range(0, len(images), batch_size):
            x = _resize(images[i:i + batch_size].to(self.device, self.dtype), self.config.image_size)
            o = self(x)
            cat = o["category"].argmax(1)
            outs["category"].append(cat)
            for k in STYLE_HEADS:
                outs[k].append(o[k].argmax(1))
                probs[k].append(o[k].softmax(1))
            outs["parts"].append(self._read_parts(o["parts"], cat))
        res = {k: torch.cat(v).cpu().numpy() for k, v in outs.items()}
        res.update({f"{k}_prob": torch.cat(v).float().cpu().numpy() for k, v in probs.items()})
        return res

    def _read_parts(self, logits: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        out = torch.full((len(category), max_parts()), -1, dtype=torch.long, device=logits.device)
        for ci, c in enumerate(self.config.categories):
            rows = category == ci
            for j, (_, _, start, k) in enumerate(s for s in self.slots if s[0] == c):
                out[rows, j] = logits[rows, start:start + k].argmax(1)
        return out


def max_parts() -> int:
    return max(len(p) for p in CATEGORIES.values())


def images_to_tensor(images: list[np.ndarray] | np.ndarray, size: int) -> torch.Tensor:
    """uint8 (H, W, 3) images -> (B, 3, size, size) in [-1, 1] (the generator's pixel convention)."""
    x = torch.from_numpy(np.stack([np.asarray(i, dtype=np.uint8) for i in images])).permute(0, 3, 1, 2)
    return _resize(x.float() / 127.5 - 1, size)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    return nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


@dataclass
class RenderLabels:
    images: torch.Tensor     # (N, 3, S, S) in [-1, 1]
    category: torch.Tensor   # (N,)
    palette: torch.Tensor
    pattern: torch.Tensor
    finish: torch.Tensor
    parts: torch.Tensor      # (N, max_parts)
    identity: list[str]      # base identity id (distractors map to their source identity)


def load_renders(root: str | Path, image_size: int, categories: list[str]) -> RenderLabels:
    """Every render of a world (views and distractors) with its true attributes."""
    root = Path(root)
    items = pl.read_parquet(root / "items.parquet")
    views = pl.read_parquet(root / "views.parquet").join(
        items.select("item_id", "attributes", "palette", "pattern", "finish"), on="item_id")
    cat_idx = {c: i for i, c in enumerate(categories)}
    parts = np.full((views.height, max_parts()), 0, dtype=np.int64)
    for r, (cat, attrs, ident) in enumerate(views.select("category", "attributes", "identity_id").iter_rows()):
        a = json.loads(attrs)
        values = {p: int(a[p]) for p in CATEGORIES[cat]}
        if "~" in ident:  # a distractor: "<identity>~<part>=<variant>"
            p, v = ident.split("~", 1)[1].split("=")
            values[p] = int(v)
        parts[r, :len(values)] = list(values.values())
    x = images_to_tensor([load_rgb(root / p) for p in views["image"]], image_size)
    t = lambda c: torch.as_tensor(views[c].cast(pl.Int64).to_numpy().copy())  # noqa: E731
    return RenderLabels(x, torch.as_tensor([cat_idx[c] for c in views["category"]]), t("palette"), t("pattern"),
                        t("finish"), torch.from_numpy(parts),
                        [i.split("~", 1)[0] for i in views["identity_id"]])


def train_attribute_reader(root: str | Path, image_size: int = 32, epochs: int = 8, batch_size: int = 128,
                           holdout: float = 0.2, seed: int = 0, progress: bool = True,
                           device: torch.device | str = "cpu") -> tuple[AttributeReader, dict[str, float]]:
    """Train on the renders of (1 - holdout) of the identities; accuracy on the others' renders."""
    from tqdm.auto import tqdm

    from recsys.world.oracle import World

    torch.manual_seed(seed)
    cats = list(World(root).manifest["vocab"]["categories"])
    data = load_renders(root, image_size, cats)
    idents = sorted(set(data.identity))
    rng = np.random.default_rng(seed)
    held = set(rng.choice(idents, max(1, int(len(idents) * holdout)), replace=False).tolist())
    test = torch.as_tensor([i in held for i in data.identity])
    tr = torch.nonzero(~test).squeeze(1)
    model = AttributeReader(AttributeReaderConfig(image_size=image_size, categories=tuple(cats))).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    steps = epochs * max(1, len(tr) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    model.train()
    for _ in tqdm(range(steps), desc="train attribute reader", disable=not progress):
        b = tr[torch.randint(len(tr), (batch_size,), generator=g)]
        x = data.images[b]
        # light augmentation: brightness jitter and horizontal flips (neither changes an attribute)
        x = torch.where(torch.rand(len(b), 1, 1, 1, generator=g) < 0.5, x.flip(-1), x)
        x = (x + 0.1 * (torch.rand(len(b), 1, 1, 1, generator=g) - 0.5)).clamp(-1, 1)
        o = model(x.to(device))
        cat = data.category[b].to(device)
        loss = (nn.functional.cross_entropy(o["category"], cat)
                + sum(nn.functional.cross_entropy(o[k], getattr(data, k)[b].to(device)) for k in STYLE_HEADS)
                + model.part_loss(o["parts"], cat, data.parts[b].to(device)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.cpu().eval()
    te = torch.nonzero(test).squeeze(1)
    read = model.read(data.images[te])
    acc = {k: float((read[k] == getattr(data, k)[te].numpy()).mean()) for k in ["category", *STYLE_HEADS]}
    true_parts = data.parts[te].numpy()
    n_parts = np.asarray([len(CATEGORIES[cats[c]]) for c in data.category[te].numpy()])
    mask = np.arange(max_parts())[None] < n_parts[:, None]
    acc["parts"] = float((read["parts"] == true_parts)[mask].mean())
    acc["held_out_renders"] = len(te)
    return model, acc
