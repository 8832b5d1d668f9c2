"""Layered YAML configuration validated by pydantic.

Layers, later wins (RecBole-style): ``configs/defaults.yaml``, then a named config
(``configs/<name>.yaml`` or a path), then ``--set a.b=value`` overrides. Every leaf remembers which
layer set it, so a validation error names the key *and* the file (or ``--set``) it came from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ragar.encoders.configs import PersonalizeEncoderConfig
from ragar.generation.configs import AutoencoderConfig, GenerationConfig, GeneratorConfig
from ragar.runtime import RuntimeConfig
from recsys.preference import PreferenceConfig
from recsys.world.config import WorldConfig


class EncoderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: str = Field("efficientnet-lite0", description="efficientnet-lite0 | pixels | clip:<dir> | "
                       "siglip:<dir>")
    text: str | None = Field("minilm", description="minilm | none | <sentence-transformers dir>")
    text_weight: float = Field(0.5, ge=0, le=1, description="share of the text embedding in the item "
                               "embedding (0 = image only)")
    image_size: int = Field(224, ge=32, le=512)
    identity: str | None = Field(None, description="identity encoder for consistency scores and the FPR gallery "
                                 "(nearid:<dir>, nearid:demo for the shipped one); default: the image encoder")
    batch_size: int = Field(64, ge=1)


class IndexConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    exact_below: int = Field(50_000, ge=1, description="catalogs smaller than this use an exact index")
    kind: str = Field("hnsw", pattern="^(hnsw|ivf)$")
    hnsw_m: int = Field(32, ge=4)
    hnsw_ef_search: int = Field(128, ge=1)
    ivf_nlist: int = Field(1024, ge=1)
    ivf_nprobe: int = Field(32, ge=1)


class EvalPreferenceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_pairs: int = Field(2000, ge=1)
    k: int = Field(10, ge=1)
    methods: list[str] = Field(default_factory=lambda: ["ragar", "uniform", "recency", "reference-only"])


class RankerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cut: float = Field(0.8, gt=0, lt=1, description="time quantile that starts the test window")
    valid_share: float = Field(0.1, gt=0, lt=1, description="last share of the train window used for validation")
    epochs: int = Field(4, ge=1, description="torch ranker epochs")
    max_train: int | None = Field(None, ge=100, description="cap on training impressions (newest kept)")
    hr_queries: int = Field(500, ge=1, description="test clicks ranked among sampled candidates for HR@10")
    hr_negatives: int = Field(99, ge=1)
    spearman_pairs: int = Field(3000, ge=10, description="held-out (user, image) pairs for the oracle check")
    seed: int = 0


#: the replay's trade-off sweep over the preference guidance scale, around the shipped 6: the
#: default of both `ragar eval replay --tradeoff-scales` and the config's demo section
TRADEOFF_SCALES = "0,2,4,6,9"


class DemoConfig(BaseModel):
    """Sizes of the generation and evaluation steps of ``ragar demo``."""

    model_config = ConfigDict(extra="forbid")
    generation_requests: int = Field(200, ge=1)
    replay_requests: int = Field(200, ge=1)
    candidates: int = Field(4, ge=1, description="candidates of the demo's one `ragar generate` request")
    best_of: int = Field(4, ge=0, description="N of the generation comparison's best-of-N row; 0 or 1: no such "
                                              "row (N images a request: the costliest row)")
    clpips_pairs: int = Field(2000, ge=20)
    tradeoff_scales: str = TRADEOFF_SCALES
    replay_gallery: bool = Field(True, description="the replay's Finer-Personalization Rank over every render "
                                                   "(embeds them all with the identity encoder)")


class RagarConfig(BaseModel):
    """The whole configuration tree; each section is owned by the package that uses it."""

    model_config = ConfigDict(extra="forbid")
    name: str = "defaults"
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    world: WorldConfig = Field(default_factory=WorldConfig)
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    preference: PreferenceConfig = Field(default_factory=PreferenceConfig)
    eval_preference: EvalPreferenceConfig = Field(default_factory=EvalPreferenceConfig)
    ranker: RankerConfig = Field(default_factory=RankerConfig)
    autoencoder: AutoencoderConfig = Field(default_factory=AutoencoderConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    personalize_encoder: PersonalizeEncoderConfig = Field(default_factory=PersonalizeEncoderConfig)
    demo: DemoConfig = Field(default_factory=DemoConfig)


class ConfigError(ValueError):
    """A config that does not validate: the message names each bad key and its source."""


def config_dir() -> Path:
    env = os.environ.get("RAGAR_CONFIG_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "configs"


def _merge(base: dict, new: dict, src: str, origin: dict[tuple, str], prefix: tuple = ()) -> dict:
    out = dict(base)
    for k, v in new.items():
        key = (*prefix, k)
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v, src, origin, key)
        else:
            out[k] = v
            for o in [o for o in origin if o[: len(key)] == key]:
                del origin[o]
            origin[key] = src
    return out


def _load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def parse_override(text: str) -> dict:
    """``a.b.c=value`` -> {"a": {"b": {"c": value}}}; the value is parsed as YAML (1, true, [a, b])."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    value: Any = yaml.safe_load(raw) if raw else ""
    node: dict = {}
    cur = node
    parts = key.strip().split(".")
    for p in parts[:-1]:
        cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = value
    return node


def resolve_config_path(name: str) -> Path:
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    cand = config_dir() / f"{name}.yaml"
    if cand.exists():
        return cand
    known = sorted(x.stem for x in config_dir().glob("*.yaml"))
    raise ConfigError(f"config {name!r} not found (neither a file nor one of {known})")


def load_config(name: str | None = None, overrides: list[str] | None = None) -> RagarConfig:
    origin: dict[tuple, str] = {}
    data: dict = {}
    defaults = config_dir() / "defaults.yaml"
    if defaults.exists():
        data = _merge(data, _load_yaml(defaults), str(defaults), origin)
    if name:
        path = resolve_config_path(name)
        data = _merge(data, _load_yaml(path), str(path), origin)
        data.setdefault("name", path.stem)
    for ov in overrides or []:
        data = _merge(data, parse_override(ov), f"--set {ov}", origin)
    try:
        return RagarConfig.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = tuple(str(x) for x in err["loc"])
            src = next((origin[loc[:i]] for i in range(len(loc), 0, -1) if loc[:i] in origin), "defaults")
            what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"{'.'.join(loc)}: {what} (from {src})")
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines)) from None
