"""Decoding any image a caller hands over into HxWx3 uint8, safely.

PIL images, arrays, file paths and encoded bytes (uploads) all go through :func:`load_rgb`: the
header is read before any pixels (an over-limit image is refused before it is decoded), every
mode is converted the same way (16-bit grey scaled, transparency on white), and a non-image is an
:class:`ImageInputError` that names the input.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

ImageLike = Image.Image | np.ndarray | str | Path | bytes

#: Reject anything bigger than this before decoding (decompression bombs).
MAX_IMAGE_PIXELS = 4096 * 4096


class ImageInputError(ValueError):
    """An input that is not a usable image: says which one and why."""


_ADDRESS = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")


def pil_to_rgb(im: Image.Image) -> np.ndarray:
    """HxWx3 uint8 from any PIL mode: 16- and 32-bit grey scaled down (not clipped to white), float
    grey in [0, 1] or [0, 255], transparency composited on white (a cut-out product photo keeps
    its white page, not a black one)."""
    if im.mode.startswith("I") or im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I;16") or (im.mode == "I" and a.max() > 255):
            a = a / 257.0
        elif im.mode == "F" and a.max() <= 1.0:
            a = a * 255.0
        g = np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
        return np.ascontiguousarray(np.repeat(g[..., None], 3, axis=2))
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))


def load_rgb(x: ImageLike, max_pixels: int = MAX_IMAGE_PIXELS, size: int | tuple[int, int] | None = None,
             resample: Image.Resampling | None = None) -> np.ndarray:
    """Decode to HxWx3 uint8, refusing non-images and oversized images with a clear message;
    ``size`` (an int for a square) resizes the result with Pillow (``resample``: its default)."""
    rgb = _decode(x, max_pixels)
    if size is None:
        return rgb
    wh = (size, size) if isinstance(size, int) else tuple(size)
    return rgb if rgb.shape[1::-1] == wh else np.asarray(Image.fromarray(rgb).resize(wh, resample))


def _decode(x: ImageLike, max_pixels: int) -> np.ndarray:
    if isinstance(x, np.ndarray):
        arr = x
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise ImageInputError(f"array of shape {arr.shape} is not an HxWx3 image")
        if arr.shape[0] * arr.shape[1] > max_pixels:
            raise ImageInputError(f"image of {arr.shape[1]}x{arr.shape[0]} exceeds {max_pixels} pixels")
        if arr.dtype == np.uint16:  # 16-bit: scaled down, not clipped to white
            arr = (arr.astype(np.float64) / 257.0).round()
        if arr.dtype != np.uint8:
            if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
                raise ImageInputError(f"image array of dtype {arr.dtype} is not numeric pixel data")
            if not np.isfinite(arr).all():
                raise ImageInputError("image array contains NaN or inf")
            arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(arr[..., :3])
    if isinstance(x, (bytes, bytearray, memoryview)):  # an upload: the header is read before any pixels
        name, x = "uploaded bytes", io.BytesIO(bytes(x))
    else:
        name = x
    if isinstance(x, (str, Path, io.BytesIO)):
        try:
            with Image.open(x) as im:
                if im.width * im.height > max_pixels:
                    raise ImageInputError(f"{name}: {im.width}x{im.height} exceeds {max_pixels} pixels")
                return pil_to_rgb(im)
        except UnidentifiedImageError:
            raise ImageInputError(f"{name}: not a readable image (no image format Pillow decodes: PNG, JPEG, "
                                  "WebP, GIF, BMP, TIFF, ...)") from None
        except (OSError, Image.DecompressionBombError) as e:
            raise ImageInputError(f"{name}: not a readable image ({_ADDRESS.sub('', str(e))})") from None
    if isinstance(x, Image.Image):
        if x.width * x.height > max_pixels:
            raise ImageInputError(f"image of {x.width}x{x.height} exceeds {max_pixels} pixels")
        return pil_to_rgb(x)
    raise ImageInputError(f"cannot read an image from {type(x).__name__}")
