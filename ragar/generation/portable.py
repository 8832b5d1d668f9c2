"""Generator training pairs that travel: a few MB of scenes and preference mixtures instead of GBs
of images, rendered again at any size where the training runs.

A GPU machine may have torch but not polars, the catalog or the encoders, and little room to carry
files (64 MiB here). 30,000 aligned pairs of 128-px images are 3 GB; what they show is a few MB:
per pair an identity, two styles and a camera (:func:`ragar.generation.pairs.make_pairs` with
``render_images=False``). Every preference is a weighted sum of catalog embeddings (a history's
retrieval weights, a style pair's mean, or the reference itself), so it travels as a sparse mixture
over the catalog, solved exactly and checked on export. :func:`load_pairs` renders the scenes
with a process pool and rebuilds :class:`~ragar.generation.pairs.GeneratorPairs`; only torch,
numpy and the project's pure-Python renderer are needed.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ragar.generation.pairs import GeneratorPairs, render_scenes_uint8, unit_range
from recsys.world.render import Identity, Style, View

#: the most catalog items one preference may mix; a history's retrieval keeps top_k (20 by default)
MAX_MIX = 64
FORMAT = "ragar-portable-pairs/1"


def mixtures(preference: torch.Tensor, catalog: np.ndarray, tol: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """(rows, coefficients), each (P, K): ``preference[p] == sum_k coef[p, k] * catalog[rows[p, k]]``.

    Solved by least squares over the whole catalog, then the largest ``K`` coefficients are kept
    and refitted on their rows alone. Raises when a preference is not such a mixture (relative
    error above ``tol``), so nothing is exported that would train on a different preference."""
    v = torch.as_tensor(catalog, dtype=torch.float64)
    p = preference.to(torch.float64)
    coef = torch.linalg.lstsq(v.T, p.T).solution.T  # (P, N)
    k = int(min(MAX_MIX, max(1, int((coef.abs() > 1e-6 * coef.abs().amax(1, keepdim=True)).sum(1).max()))))
    rows = coef.abs().topk(k, dim=1).indices  # (P, K)
    sub = v[rows]  # (P, K, D)
    refit = torch.linalg.lstsq(sub.transpose(1, 2), p[:, :, None]).solution[..., 0]  # (P, K)
    err = ((refit[:, None, :] @ sub)[:, 0] - p).norm(dim=1) / p.norm(dim=1).clamp_min(1e-12)
    if float(err.max()) > tol:
        worst = int(err.argmax())
        raise ValueError(f"preference {worst} is not a mixture of at most {k} catalog items "
                         f"(relative error {float(err.max()):.2e}); it cannot be exported as one")
    return rows.numpy().astype(np.int32), refit.numpy().astype(np.float32)


def save_pairs(pairs: GeneratorPairs, item_ids: np.ndarray, catalog: np.ndarray, out: str | Path,
               meta: dict | None = None) -> dict:
    """Write ``pairs.safetensors`` and ``pairs.json`` into ``out``; returns the JSON written.
    ``pairs`` must carry ``scenes`` (``make_pairs(..., render_images=False)``)."""
    if pairs.scenes is None:
        raise ValueError("these pairs carry no scenes: make them with make_pairs(..., render_images=False)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index = {k: i for i, k in enumerate(item_ids)}
    rows, coef = mixtures(pairs.preference, catalog)
    idents: dict[Identity, int] = {}
    ident = [idents.setdefault(s[0], len(idents)) for s in pairs.scenes]
    # float16 catalog and int16 rows: the file must travel beside the device check's inputs in 64 MiB,
    # and training reads the embeddings in bfloat16 (coarser) under mixed precision anyway
    tensors = {
        "catalog": torch.as_tensor(catalog, dtype=torch.float16).contiguous(),
        "reference_row": torch.tensor([index[x] for x in pairs.reference_items], dtype=torch.int32),
        "mix_rows": torch.from_numpy(rows.astype(np.int16 if len(item_ids) < 2**15 else np.int32)),
        "mix_coef": torch.from_numpy(coef),
        "style_pair": (pairs.style_pair if pairs.style_pair is not None
                       else torch.zeros(len(rows), dtype=torch.bool)).to(torch.uint8),
        "identity": torch.tensor(ident, dtype=torch.int32),
        "target_style": torch.tensor([_style(s[1]) for s in pairs.scenes], dtype=torch.int32),
        "reference_style": torch.tensor([_style(s[2]) for s in pairs.scenes], dtype=torch.int32),
        "view": torch.tensor([_view(s[3]) for s in pairs.scenes], dtype=torch.float64),
    }
    ref = torch.as_tensor(catalog, dtype=torch.float32)[tensors["reference_row"].long()]
    if not torch.allclose(ref, pairs.reference.float(), atol=1e-6):
        raise ValueError("the pairs' reference embeddings are not rows of the catalog given")
    save_file(tensors, str(out / "pairs.safetensors"))
    doc = {"format": FORMAT, "pairs": len(rows), "catalog_items": len(item_ids), "mix": int(rows.shape[1]),
           "identities": [[i.category, i.width, i.height, [list(p) for p in i.parts]] for i in idents],
           "item_ids": [str(x) for x in item_ids], **(meta or {})}
    (out / "pairs.json").write_text(json.dumps(doc, indent=1))
    return doc


def _style(s: Style) -> list[int]:
    return [s.palette, s.pattern, s.finish]


def _view(v: View) -> list[float]:
    return [v.angle, v.scale, v.offset, float(v.background), v.light]


def read_scenes(path: str | Path) -> tuple[dict, dict[str, torch.Tensor], list[tuple[Identity, Style, Style, View]]]:
    """The exported JSON, tensors and per-pair scenes (nothing rendered)."""
    path = Path(path)
    doc = json.loads((path / "pairs.json").read_text())
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path}/pairs.json is not {FORMAT} (format {doc.get('format')!r})")
    t = load_file(str(path / "pairs.safetensors"))
    idents = [Identity(c, float(w), float(h), tuple((str(k), int(v)) for k, v in parts))
              for c, w, h, parts in doc["identities"]]
    views = t["view"].tolist()
    scenes = [(idents[i], Style(*a), Style(*b), View(v[0], v[1], v[2], int(v[3]), v[4]))
              for i, a, b, v in zip(t["identity"].tolist(), t["target_style"].tolist(),
                                    t["reference_style"].tolist(), views, strict=True)]
    return doc, t, scenes


def _render_chunk(args: tuple[list, int]) -> tuple[torch.Tensor, torch.Tensor]:
    torch.set_num_threads(1)
    return render_scenes_uint8(*args)


def render_all(scenes: list, image_size: int, workers: int | None = None, chunk: int = 512
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets and references of ``scenes`` as uint8 (P, 3, S, S), rendered by ``workers`` processes."""
    workers = workers or min(32, os.cpu_count() or 1)
    parts = [(scenes[i:i + chunk], image_size) for i in range(0, len(scenes), chunk)]
    if workers > 1 and len(parts) > 1:
        with ProcessPoolExecutor(workers) as ex:
            done = list(ex.map(_render_chunk, parts))
    else:
        done = [render_scenes_uint8(*p) for p in parts]
    return torch.cat([d[0] for d in done]), torch.cat([d[1] for d in done])


def load_pairs(path: str | Path, image_size: int, workers: int | None = None,
               rendered: tuple[torch.Tensor, torch.Tensor] | None = None, read: tuple | None = None
               ) -> GeneratorPairs:
    """Render the exported pairs at ``image_size`` (any size the world renders at; or take the
    uint8 renders ``rendered`` of :func:`render_all`) and rebuild the training pairs, normalised to
    [-1, 1] exactly as :func:`~ragar.generation.pairs.make_pairs` returns them. ``read``: what
    :func:`read_scenes` already returned for ``path``, so a caller that rendered the scenes itself
    does not read and rebuild them twice."""
    doc, t, scenes = read if read is not None else read_scenes(path)
    targets, refs = rendered if rendered is not None else render_all(scenes, image_size, workers)
    catalog = t["catalog"].float()
    pref = (t["mix_coef"][..., None] * catalog[t["mix_rows"].long()]).sum(1)
    n = doc["pairs"]
    items = doc["item_ids"]
    ref_items = [items[i] for i in t["reference_row"].tolist()]
    return GeneratorPairs(unit_range(targets), catalog[t["reference_row"].long()], pref, ["?"] * n, [None] * n,
                          ["?"] * n, ref_items, t["style_pair"].bool(), unit_range(refs), scenes=scenes)
