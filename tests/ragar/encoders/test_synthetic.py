"""Synthetic training data of a personalized encoder: input checks, the cut, pastes, augmentations."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ragar.encoders.base import ImageInputError
from ragar.encoders.synthetic import geometric_augment, object_mask, paste_on_backgrounds, read_real_images


def _product_shot(size: int = 48, colour=(200, 40, 40), bg=(220, 220, 215)) -> tuple[np.ndarray, np.ndarray]:
    """A square object on a plain background with a vertical gradient, and its true mask."""
    ramp = 1.0 - 0.12 * np.linspace(0, 1, size)[:, None, None]
    img = (np.broadcast_to(np.asarray(bg, np.float32), (size, size, 3)) * ramp).copy()
    mask = np.zeros((size, size), bool)
    mask[12:36, 16:30] = True
    img[mask] = colour
    return img.astype(np.uint8), mask


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_the_cut_finds_the_object_on_a_gradient_background():
    img, truth = _product_shot()
    m = object_mask(img)
    iou = (m & truth).sum() / (m | truth).sum()
    assert iou > 0.95
    assert not object_mask(np.full((32, 32, 3), 128, np.uint8)).any()  # plain background: nothing


def test_pastes_keep_the_object_and_change_the_background():
    img, truth = _product_shot()
    out = paste_on_backgrounds([img], 6, seed=1)
    assert len(out) == 6 and all(o.shape == img.shape and o.dtype == np.uint8 for o in out)
    red = np.array([200, 40, 40])
    for o in out:
        close = np.linalg.norm(o.astype(float) - red, axis=-1) < 30
        assert 0.5 * truth.sum() < close.sum() < 1.6 * truth.sum()  # the object, rotated and scaled
    corners = {tuple(o[1, 1]) for o in out}
    assert len(corners) >= 5  # new backgrounds, not the original one
    again = paste_on_backgrounds([img], 6, seed=1)
    assert all((a == b).all() for a, b in zip(out, again, strict=True))  # deterministic by seed
    with pytest.raises(ImageInputError, match="no object could be cut"):
        paste_on_backgrounds([np.full((32, 32, 3), 90, np.uint8)], 2)


def test_augmentations_are_geometric_only():
    img, _ = _product_shot()
    out = geometric_augment([img], 5, seed=0)
    assert len(out) == 5 and all(o.shape == img.shape for o in out)
    # colours are not changed: every augmented pixel's colour exists (nearly) in the original
    palette = np.unique(img.reshape(-1, 3), axis=0).astype(float)
    for o in out:
        px = o.reshape(-1, 3)[::7].astype(float)
        d = np.linalg.norm(px[:, None] - palette[None], axis=-1).min(1)
        assert np.median(d) < 3


def test_bad_real_images_get_clear_errors(tmp_path):
    img, _ = _product_shot()
    with pytest.raises(ValueError, match="at least 1 real image"):
        read_real_images([])
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(ImageInputError, match=r"notes\.png: not a readable image"):
        read_real_images([_png(img), str(bad)])
    with pytest.raises(ImageInputError, match=r"mixed sizes \(40x40, 48x48\)"):
        read_real_images([img, img[:40, :40]])
    with pytest.raises(ImageInputError, match="too small"):
        read_real_images([img[:8, :8]])
    assert len(read_real_images([_png(img), img])) == 2
