"""Build encoders from config strings (``efficientnet-lite0``, ``clip:<dir>``, ``siglip:<dir>``,
``personalized:<dir>`` (``ragar personalize-encoder``), ``minilm``, ``none``, or a sentence-transformers
directory)."""

from __future__ import annotations

from functools import lru_cache

from ragar.encoders.base import ImageEncoder, TextEncoder
from ragar.runtime import CPU, Runtime


@lru_cache(maxsize=8)
def build_image_encoder(spec: str, image_size: int = 224, runtime: Runtime = CPU) -> ImageEncoder:
    """The encoder ``spec`` names, on ``runtime``'s device and in its dtype (one instance per
    (spec, size, runtime): a cached encoder is never moved under another caller)."""
    enc = _image_encoder(spec, image_size)
    return enc if runtime == CPU else enc.to(runtime.device, runtime.dtype)


def _image_encoder(spec: str, image_size: int) -> ImageEncoder:
    if spec == "efficientnet-lite0":
        from ragar.encoders.efficientnet import EfficientNetLiteEncoder

        return EfficientNetLiteEncoder(image_size)
    kind, _, path = spec.partition(":")
    if kind == "contrastive" and path:
        from ragar.encoders.contrastive import ContrastiveImageEncoder

        return ContrastiveImageEncoder(path)
    if kind == "nearid" and path:
        from pathlib import Path

        from ragar.encoders.nearid import NearIDEncoder

        shipped = Path(__file__).resolve().parents[1] / "weights" / "demo-nearid"
        return NearIDEncoder(shipped if path == "demo" else path)
    if kind == "personalized" and path:
        from ragar.encoders.lora import PersonalizedEncoder

        return PersonalizedEncoder(path)
    if kind in ("clip", "siglip") and path:
        from ragar.encoders.hf_vision import HFVisionEncoder

        return HFVisionEncoder(path, kind)
    raise ValueError(f"unknown image encoder {spec!r}: use efficientnet-lite0, contrastive:<dir>, nearid:<dir>, "
                     "personalized:<dir>, clip:<dir> or siglip:<dir>")


@lru_cache(maxsize=4)
def build_text_encoder(spec: str | None, runtime: Runtime = CPU) -> TextEncoder | None:
    if spec in (None, "none", ""):
        return None
    from ragar.encoders.text import SentenceTextEncoder

    enc = SentenceTextEncoder(None if spec == "minilm" else spec)
    return enc if runtime == CPU else enc.to(runtime.device, runtime.dtype)
