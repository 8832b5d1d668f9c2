"""Hugging Face-style persistence for the project's torch models: ``save_pretrained(dir)`` writes
``model.safetensors`` + ``config.json``; ``from_pretrained(dir)`` reads them back strictly.
Nothing is pickled, so a directory a user hands over cannot run code."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import ClassVar

from safetensors.torch import load_file, save_file


class PretrainedMixin:
    """For ``nn.Module`` subclasses built as ``cls(config)`` from a dataclass ``config_class``."""

    config_class: ClassVar[type]
    model_type: ClassVar[str]

    @property
    def device(self):
        """Where the parameters live (diffusers pipelines ask every component)."""
        return next(self.parameters()).device

    @property
    def dtype(self):
        return next(self.parameters()).dtype

    def save_pretrained(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path / "model.safetensors"))
        (path / "config.json").write_text(json.dumps({"type": self.model_type, **asdict(self.config)}, indent=2))
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path):
        path = Path(path)
        if not (path / "config.json").exists() or not (path / "model.safetensors").exists():
            raise FileNotFoundError(f"{path} holds no trained {cls.model_type} model "
                                    "(expected config.json and model.safetensors)")
        raw = json.loads((path / "config.json").read_text())
        if raw.pop("type", cls.model_type) != cls.model_type:
            raise ValueError(f"{path} holds a different kind of model, not {cls.model_type}")
        known = {f.name: f for f in fields(cls.config_class)}
        unknown = set(raw) - set(known)
        if unknown:
            raise ValueError(f"{path}/config.json: unknown keys {sorted(unknown)}")
        cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        model = cls(cls.config_class(**cfg))
        model.load_state_dict(load_file(str(path / "model.safetensors")), strict=True)
        return model.eval()
