"""Decoding any image a user hands over into HxWx3 uint8 pixels."""

import io

import numpy as np
import pytest
from PIL import Image

from ragar.encoders.base import ImageInputError, load_rgb


def _encode(im: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def test_16_bit_grey_is_scaled_not_clipped_to_white():
    grey16 = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    out = load_rgb(_encode(Image.fromarray(grey16)))
    assert out.dtype == np.uint8 and out.shape == (64, 64, 3)
    assert out.min() == 0 and out.max() == 255 and 100 < out.mean() < 155  # a ramp, not a white page
    assert np.array_equal(out[..., 0], (grey16 / 257).round().astype(np.uint8))


def test_transparency_composites_on_white():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255  # red, fully transparent on the left half, opaque on the right
    rgba[:, 4:, 3] = 255
    out = load_rgb(_encode(Image.fromarray(rgba)))
    assert (out[:, :4] == 255).all() and (out[:, 4:] == (255, 0, 0)).all()


def test_float_grey_in_unit_range():
    f = Image.fromarray(np.full((4, 4), 0.5, np.float32))
    assert (load_rgb(f) == 128).all()


@pytest.mark.parametrize("data", [b"GIF89a but not really", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, b""])
def test_unreadable_bytes_say_so_without_internals(data):
    with pytest.raises(ImageInputError, match="not a readable image") as e:
        load_rgb(data)
    assert "0x" not in str(e.value) and "BytesIO" not in str(e.value)
