"""Read a YAML file into a pydantic model, with errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def read_model(path: str | Path, model: type[M], error: type[Exception]) -> M:
    """``model`` from the YAML at ``path``; any problem raises ``error`` with one line per key,
    ``<file>: <dotted.key>: <what is wrong>``."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise error(f"{path}: {e}") from None
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        lines = [f"{path}: {'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
                 for err in e.errors()]
        raise error("\n".join(lines)) from None
