"""A reference image sent in the request body: base64 in any of the forms clients produce, then
decoded under the pixel limit and refused when it carries no picture.

Accepted: standard or URL-safe base64, with or without padding, wrapped over lines (MIME, PEM
style), optionally as a ``data:image/...;base64,`` URI (what a browser's FileReader gives). Each
refusal says what was wrong, so a client can fix it.
"""

from __future__ import annotations

import base64
import binascii
import re

import numpy as np

from ragar.encoders.base import ImageInputError, load_rgb

_WS = re.compile(r"\s+")
_BAD = re.compile(r"[^A-Za-z0-9+/=_-]")
#: a picture whose every channel varies by less than this (0..255) is blank (one flat colour)
MIN_CHANNEL_STD = 1.0


class UploadError(ValueError):
    """A refused upload; ``status`` is 400 (bad input) or 413 (too large)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def decode_base64(text: str, max_bytes: int, field: str = "reference_image") -> bytes:
    s = text.strip()
    if s[:5].lower() == "data:":
        head, comma, s = s.partition(",")
        if not comma or not head.lower().endswith(";base64"):
            raise UploadError(f"{field}: a data: URI must be base64, as data:image/png;base64,<data>")
    s = _WS.sub("", s)
    if len(s) > max_bytes * 4 // 3 + 4:
        raise UploadError(f"{field} is larger than {max_bytes} bytes", 413)
    if not s:
        raise UploadError(f"{field} is empty")
    bad = _BAD.search(s)
    if bad:
        raise UploadError(f"{field} is not valid base64: character {bad.group()!r} at position {bad.start() + 1} "
                          "(from 1, line breaks not counted) is not in the base64 alphabet (standard A-Z a-z 0-9 "
                          "+ / or URL-safe - _)")
    urlsafe, standard = bool(re.search(r"[-_]", s)), bool(re.search(r"[+/]", s))
    if urlsafe and standard:
        raise UploadError(f"{field} is not valid base64: it mixes the standard (+ /) and URL-safe (- _) alphabets")
    core = s.rstrip("=")
    if "=" in core:
        raise UploadError(f"{field} is not valid base64: '=' padding appears before the end")
    if len(core) % 4 == 1:
        raise UploadError(f"{field} is not valid base64: its length ({len(core)} characters without padding) "
                          "cannot be a whole number of bytes; was it cut off?")
    try:
        raw = base64.b64decode(core + "=" * (-len(core) % 4), altchars=b"-_" if urlsafe else None, validate=True)
    except (binascii.Error, ValueError) as e:
        raise UploadError(f"{field} is not valid base64 ({e})") from None
    if len(raw) > max_bytes:
        raise UploadError(f"{field} is {len(raw)} bytes, above the {max_bytes} byte limit", 413)
    return raw


def decode_reference(text: str, max_bytes: int, field: str = "reference_image") -> np.ndarray:
    """HxWx3 uint8 pixels of an uploaded reference, or :class:`UploadError`."""
    raw = decode_base64(text, max_bytes, field)
    try:
        pixels = load_rgb(raw)
    except ImageInputError as e:
        raise UploadError(f"{field}: {e}") from None
    spread = pixels.reshape(-1, 3).std(axis=0)
    if float(spread.max()) < MIN_CHANNEL_STD:
        colour = tuple(int(v) for v in pixels.reshape(-1, 3).mean(axis=0).round())
        raise UploadError(f"{field} is blank: it decodes to one flat colour (RGB {colour}) with nothing to render; "
                          "send a photo or render of the item")
    return pixels
