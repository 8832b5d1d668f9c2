"""Assemble a :class:`Personalizer` from directories: a dataset, a trained generator, rankers.

One function, so the CLI, the evaluation and the API build the same object from the same config.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from ragar.encoders.catalog import CatalogEmbeddings, embed_catalog
from ragar.encoders.registry import build_image_encoder, build_text_encoder
from ragar.generation.configs import GenerationConfig
from ragar.generation.personalize import Personalizer
from ragar.runtime import CPU, Runtime
from recsys.preference import PreferenceConfig
from recsys.ranking.features import ItemTable

#: the generator trained for the demo world ships with the package (see its provenance.json)
DEMO_GENERATOR = Path(__file__).resolve().parents[1] / "weights" / "demo-generator"
#: the world's attribute reader trained on the demo world (see its accuracy.json)
DEMO_ATTRIBUTE_READER = Path(__file__).resolve().parents[1] / "weights" / "demo-attribute-reader"


def item_table(items: pl.DataFrame, emb: CatalogEmbeddings, text_weight: float) -> ItemTable:
    cats = sorted(items["category"].unique().to_list())
    index = {c: i for i, c in enumerate(cats)}
    return ItemTable(emb.ids, emb.image, emb.combined(text_weight),
                     np.asarray([index[c] for c in items["category"]]), cats)


def item_image_paths(data: str | Path, items: pl.DataFrame) -> dict[str, str]:
    """item id -> full path of its image (the items table stores paths relative to the dataset)."""
    return {i: str(Path(data) / p) for i, p in zip(items["item_id"], items["image"], strict=True)}


def personalizer_from_config(cfg, data: str | Path, generator: str | Path | None = None,
                             rankers: str | Path | None = None, progress: bool = False,
                             runtime: Runtime = CPU) -> Personalizer:
    """:func:`load_personalizer` with the encoders, preference and generation settings of a
    :class:`~ragar.config.RagarConfig`, as the CLI and the API both build it."""
    enc = cfg.encoder
    return load_personalizer(data, generator, rankers, image_encoder=enc.image, image_size=enc.image_size,
                             text_encoder=enc.text, text_weight=enc.text_weight, preference=cfg.preference,
                             generation=cfg.generation, identity_encoder=enc.identity, progress=progress,
                             runtime=runtime)


def load_personalizer(data: str | Path, generator: str | Path | None = None, rankers: str | Path | None = None, *,
                      image_encoder: str = "efficientnet-lite0", image_size: int = 224,
                      text_encoder: str | None = "minilm",
                      text_weight: float = 0.5, preference: PreferenceConfig | None = None,
                      identity_encoder: str | None = None,
                      generation: GenerationConfig | None = None, scheduler: str = "ddim", ranker: str = "ragar",
                      progress: bool = False, runtime: Runtime = CPU) -> Personalizer:
    """``generator`` defaults to the shipped demo generator; without ``rankers`` candidates get no
    preference-fit score (best-of-N then ranks by identity alone). Every model is put on
    ``runtime``'s device in its dtype (the catalog index and the log stay in host memory)."""
    from ragar.generation.pipeline import RagarPipeline
    from recsys.data.io import read_table
    from recsys.ranking.pipeline import Rankers
    from recsys.ranking.scoring import PreferenceScorer

    data = Path(data)
    if not (data / "items.parquet").exists():
        raise FileNotFoundError(f"{data} has no items.parquet: not a dataset directory")
    pipe = RagarPipeline.from_pretrained(generator or DEMO_GENERATOR, scheduler=scheduler,
                                         torch_dtype=runtime.dtype).to(runtime.device)
    pipe.set_progress_bar_config(disable=not progress)
    img = build_image_encoder(image_encoder, image_size, runtime)
    txt = build_text_encoder(text_encoder, runtime)
    items = pl.read_parquet(data / "items.parquet")
    emb = embed_catalog(data, img, txt, items=items, progress=progress)
    dim = pipe.adapter.config.embed_dim
    if emb.combined(text_weight).shape[1] != dim:
        raise ValueError(f"the generator was trained on {dim}-d embeddings, but these encoders give "
                         f"{emb.combined(text_weight).shape[1]}-d ones (use the encoders it was trained with)")
    inter = read_table(data, "interactions")
    scorer = None
    if rankers is not None:
        model = Rankers.from_pretrained(rankers).din.get(ranker)
        if model is None:
            raise KeyError(f"{rankers} has no torch ranker {ranker!r}")
        scorer = PreferenceScorer(model, item_table(items, emb, text_weight), inter).to(runtime.device, runtime.dtype)
    refs = item_image_paths(data, items)
    ident = build_image_encoder(identity_encoder, 224, runtime) if identity_encoder else None
    return Personalizer(pipe, emb, inter, img, text_weight, preference, scorer, identity_encoder=ident,
                        reference_images=refs, config=generation)
