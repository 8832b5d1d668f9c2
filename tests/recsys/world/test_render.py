import numpy as np
import pytest

from recsys.world.render import CATEGORIES, Identity, Style, View, render


def _ident(cat="mug"):
    return Identity(cat, 0.5, 0.5, tuple((p, 0) for p in CATEGORIES[cat]))


@pytest.mark.parametrize("size", [32, 64, 256])
def test_render_shape_and_determinism(size):
    a = render(_ident(), Style(0, 1, 1), View(10, 0.9, 0.05, 2, 0.3), size)
    b = render(_ident(), Style(0, 1, 1), View(10, 0.9, 0.05, 2, 0.3), size)
    assert a.shape == (size, size, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)


@pytest.mark.parametrize("cat", list(CATEGORIES))
def test_every_part_change_is_visible_but_local(cat):
    base = _ident(cat)
    style, view = Style(1, 0, 0), View(0, 0.9, 0, 0, 0)
    img = render(base, style, view, 64).astype(int)
    for part, n in CATEGORIES[cat].items():
        for v in range(1, n):
            other = render(base.with_part(part, v), style, view, 64).astype(int)
            changed = (np.abs(img - other).sum(-1) > 30).mean()
            assert 0.003 < changed < 0.5, (cat, part, v, changed)


def _object_mask(ident, style):
    # pixels that do not change when only the background changes belong to the object
    a = render(ident, style, View(0, 0.9, 0, 0, 0), 64).astype(int)
    b = render(ident, style, View(0, 0.9, 0, 5, 0), 64).astype(int)
    return np.abs(a - b).sum(-1) < 10, a


def test_style_changes_colour_not_silhouette():
    ident = _ident("vase")
    m_red, red = _object_mask(ident, Style(0, 0, 0))
    m_blue, blue = _object_mask(ident, Style(1, 0, 0))
    assert 0.1 < m_red.mean() < 0.6
    assert (m_red == m_blue).mean() > 0.98  # same silhouette
    assert (np.abs(red - blue).sum(-1)[m_red] > 150).mean() > 0.5  # the body changed colour
