"""Procedural renderer of the synthetic world's product images.

Every object is a list of primitives (ellipse, box, convex polygon, ring) evaluated as signed
distance fields on a pixel grid, so edges are anti-aliased at any size from 32 to 256 px and a
render is a pure function of its parameters (deterministic by construction). Identity attributes
(category, proportions, parts) decide *which* primitives exist and where; style attributes
(palette, pattern, finish) decide *how* they are coloured; view parameters (pose, scale,
background, lighting) decide the camera. Changing one part gives a near-identity distractor that
shares everything else with its source render.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# --- vocabularies -------------------------------------------------------------------------

#: Style: (name, primary RGB, secondary RGB). Primaries are saturated and far apart so a
#: preferred colour is readable at 32 px; secondaries carry the pattern.
PALETTES: list[tuple[str, tuple[int, int, int], tuple[int, int, int]]] = [
    ("red", (205, 40, 45), (250, 235, 225)),
    ("blue", (35, 75, 205), (245, 215, 70)),
    ("green", (40, 150, 65), (240, 240, 200)),
    ("yellow", (240, 200, 30), (60, 60, 160)),
    ("purple", (125, 50, 175), (170, 230, 120)),
    ("orange", (245, 125, 25), (30, 130, 140)),
]
PATTERNS = ["solid", "striped", "dotted", "checkered"]
FINISHES = ["matte", "glossy"]

#: Backgrounds are desaturated so that they never compete with a palette colour.
BACKGROUNDS: list[tuple[str, tuple[int, int, int]]] = [
    ("white", (236, 236, 232)),
    ("grey", (175, 178, 180)),
    ("beige", (222, 208, 184)),
    ("mint", (200, 222, 210)),
    ("sky", (198, 212, 230)),
    ("charcoal", (70, 72, 78)),
]

DARK = (45, 45, 50)

#: Category -> part name -> the phrase of each variant. Parts are identity attributes; a
#: near-identity distractor changes exactly one of them. The phrases make the item titles.
PART_PHRASES: dict[str, dict[str, list[str]]] = {
    "mug": {"handle": ["no handle", "a round handle", "a square handle"], "lid": ["no lid", "a lid"]},
    "lamp": {"shade": ["a cone shade", "a dome shade", "a drum shade"], "base": ["a round base", "a flat base"]},
    "bottle": {"cap": ["no cap", "a round cap", "a square cap"], "neck": ["a short neck", "a long neck"]},
    "chair": {"back": ["a plain back", "an oval back", "a slatted back"], "arms": ["no armrest", "an armrest"]},
    "vase": {"handles": ["no handles", "two handles"], "foot": ["no foot", "a flat foot", "a cone foot"]},
    "hat": {"crown": ["a round crown", "a flat crown", "a pointed crown"], "band": ["no band", "a band"]},
    "bag": {"strap": ["a short strap", "a long strap", "a box handle"], "flap": ["no flap", "a flap"]},
    "table": {"legs": ["two legs", "three legs", "a pedestal"], "shelf": ["no shelf", "a shelf"]},
}
CATEGORIES: dict[str, dict[str, int]] = {c: {p: len(v) for p, v in parts.items()} for c, parts in PART_PHRASES.items()}


@dataclass(frozen=True)
class Identity:
    """What the object is: category, proportions in [0, 1], and part variants."""

    category: str
    width: float
    height: float
    parts: tuple[tuple[str, int], ...]

    def part(self, name: str) -> int:
        return dict(self.parts)[name]

    def with_part(self, name: str, value: int) -> Identity:
        return Identity(self.category, self.width, self.height,
                        tuple((k, value if k == name else v) for k, v in self.parts))


@dataclass(frozen=True)
class Style:
    """How the object looks."""

    palette: int
    pattern: int
    finish: int


@dataclass(frozen=True)
class View:
    """The camera: pose angle (degrees), scale, horizontal offset, background, lighting."""

    angle: float
    scale: float
    offset: float
    background: int
    light: float  # -1 (lit from the left) .. 1 (lit from the right)


# --- signed distance primitives -----------------------------------------------------------

def _ellipse(x, y, cx, cy, a, b):
    return (np.sqrt(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2) - 1.0) * min(a, b)


def _box(x, y, cx, cy, hw, hh, r=0.0):
    qx = np.abs(x - cx) - hw + r
    qy = np.abs(y - cy) - hh + r
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0) - r


def _poly(x, y, pts):
    """Convex polygon (counter-clockwise in y-down coords: any consistent order works)."""
    pts = np.asarray(pts, dtype=np.float32)
    d = None
    n = len(pts)
    # orientation sign so that 'inside' is negative whatever the winding
    area = sum(pts[i, 0] * pts[(i + 1) % n, 1] - pts[(i + 1) % n, 0] * pts[i, 1] for i in range(n))
    sgn = 1.0 if area > 0 else -1.0
    for i in range(n):
        (x0, y0), (x1, y1) = pts[i], pts[(i + 1) % n]
        ex, ey = x1 - x0, y1 - y0
        norm = float(np.hypot(ex, ey)) or 1.0
        di = sgn * ((x - x0) * ey - (y - y0) * ex) / norm
        d = di if d is None else np.maximum(d, di)
    return d


def _ring(x, y, cx, cy, a, b, t):
    return np.abs(_ellipse(x, y, cx, cy, a, b)) - t


# --- the shape families -------------------------------------------------------------------

def _shapes(ident: Identity, x, y):
    """Return [(sdf, role)] back to front. role: 'primary' (palette + pattern), 'secondary', 'dark'."""
    w = 0.75 + 0.35 * ident.width   # proportions scale the main body
    h = 0.75 + 0.35 * ident.height
    draw = _FAMILIES.get(ident.category)
    if draw is None:  # pragma: no cover - guarded by the config validator
        raise ValueError(f"unknown category {ident.category!r}")
    return draw(dict(ident.parts), x, y, w, h)


def _mug(p: dict, x, y, w: float, h: float) -> list:
    out = []
    if p["handle"] == 1:
        out.append((_ring(x, y, 0.42 * w, 0.05, 0.2, 0.25 * h, 0.05), "primary"))
    elif p["handle"] == 2:
        square = np.maximum(_box(x, y, 0.45 * w, 0.05, 0.17, 0.24 * h),
                            -_box(x, y, 0.45 * w, 0.05, 0.09, 0.14 * h))
        out.append((square, "primary"))
    out.append((_box(x, y, 0, 0.08, 0.38 * w, 0.45 * h, 0.06), "primary"))
    if p["lid"] == 1:
        out.append((_box(x, y, 0, 0.08 - 0.47 * h, 0.42 * w, 0.06, 0.03), "secondary"))
    return out


def _lamp(p: dict, x, y, w: float, h: float) -> list:
    out = []
    base_y = 0.72
    if p["base"] == 0:
        out.append((_ellipse(x, y, 0, base_y, 0.34 * w, 0.08), "dark"))
    else:
        out.append((_box(x, y, 0, base_y, 0.3 * w, 0.07, 0.01), "dark"))
    out.append((_box(x, y, 0, 0.3, 0.04, 0.4 * h), "dark"))
    top, bot = -0.62 * h, -0.05
    if p["shade"] == 0:
        out.append((_poly(x, y, [(-0.22 * w, top), (0.22 * w, top), (0.5 * w, bot), (-0.5 * w, bot)]),
                    "primary"))
    elif p["shade"] == 1:
        out.append((np.maximum(_ellipse(x, y, 0, bot, 0.48 * w, 0.6 * h), y - bot), "primary"))
    else:
        out.append((_box(x, y, 0, (top + bot) / 2, 0.36 * w, (bot - top) / 2, 0.02), "primary"))
    return out


def _bottle(p: dict, x, y, w: float, h: float) -> list:
    out = []
    neck_h = 0.28 if p["neck"] == 0 else 0.42
    body_top = -0.15 * h
    out.append((_box(x, y, 0, body_top + 0.4 * h + 0.1, 0.3 * w, 0.4 * h + 0.1, 0.1), "primary"))
    out.append((_box(x, y, 0, body_top - neck_h / 2, 0.1, neck_h / 2 + 0.05), "primary"))
    cap_y = body_top - neck_h - 0.05
    if p["cap"] == 1:
        out.append((_ellipse(x, y, 0, cap_y, 0.14, 0.09), "secondary"))
    elif p["cap"] == 2:
        out.append((_box(x, y, 0, cap_y, 0.14, 0.09), "dark"))
    return out


def _chair(p: dict, x, y, w: float, h: float) -> list:
    out = []
    legs = [(-0.3 * w, 0.55), (0.3 * w, 0.55)]
    for lx, ly in legs:
        out.append((_box(x, y, lx, ly, 0.04, 0.3), "dark"))
    out.append((_box(x, y, 0, 0.2, 0.38 * w, 0.07, 0.02), "primary"))
    if p["back"] == 0:
        out.append((_box(x, y, 0.28 * w, -0.25 * h, 0.08, 0.42 * h, 0.02), "primary"))
    elif p["back"] == 1:
        out.append((_ellipse(x, y, 0.25 * w, -0.3 * h, 0.16, 0.4 * h), "primary"))
    else:
        out.append((_box(x, y, 0.28 * w, -0.25 * h, 0.08, 0.42 * h, 0.02), "primary"))
        out.append((_box(x, y, 0.28 * w, -0.28 * h, 0.05, 0.3 * h), "secondary"))
    if p["arms"] == 1:
        out.append((_box(x, y, 0.0, 0.0, 0.33 * w, 0.035), "dark"))
    return out


def _vase(p: dict, x, y, w: float, h: float) -> list:
    out = []
    if p["foot"] == 1:
        out.append((_box(x, y, 0, 0.72, 0.22 * w, 0.06), "dark"))
    elif p["foot"] == 2:
        out.append((_poly(x, y, [(-0.1, 0.6), (0.1, 0.6), (0.26 * w, 0.8), (-0.26 * w, 0.8)]), "dark"))
    if p["handles"] == 1:
        out.append((_ring(x, y, -0.4 * w, -0.1, 0.14, 0.2, 0.04), "secondary"))
        out.append((_ring(x, y, 0.4 * w, -0.1, 0.14, 0.2, 0.04), "secondary"))
    out.append((_ellipse(x, y, 0, 0.15, 0.42 * w, 0.48 * h), "primary"))
    out.append((_box(x, y, 0, -0.42 * h, 0.13, 0.2), "primary"))
    return out


def _hat(p: dict, x, y, w: float, h: float) -> list:
    out = []
    out.append((_ellipse(x, y, 0, 0.35, 0.7 * w, 0.14), "primary"))
    if p["crown"] == 0:
        out.append((np.maximum(_ellipse(x, y, 0, 0.35, 0.4 * w, 0.65 * h), y - 0.35), "primary"))
    elif p["crown"] == 1:
        out.append((_box(x, y, 0, 0.0, 0.36 * w, 0.35 * h, 0.05), "primary"))
    else:
        out.append((_poly(x, y, [(-0.38 * w, 0.35), (0.38 * w, 0.35), (0, -0.55 * h)]), "primary"))
    if p["band"] == 1:
        out.append((_box(x, y, 0, 0.25, 0.37 * w, 0.05), "dark"))
    return out


def _bag(p: dict, x, y, w: float, h: float) -> list:
    out = []
    if p["strap"] == 0:
        out.append((np.maximum(_ring(x, y, 0, -0.2, 0.26 * w, 0.3, 0.04), y + 0.2), "dark"))
    elif p["strap"] == 1:
        out.append((np.maximum(_ring(x, y, 0, -0.2, 0.42 * w, 0.55, 0.035), y + 0.2), "dark"))
    else:
        out.append((_box(x, y, 0, -0.4, 0.22 * w, 0.18), "dark"))
        out.append((_box(x, y, 0, -0.38, 0.16 * w, 0.14), "none"))
    out.append((_box(x, y, 0, 0.22, 0.5 * w, 0.42 * h, 0.06), "primary"))
    if p["flap"] == 1:
        out.append((_poly(x, y, [(-0.5 * w, 0.22 - 0.42 * h), (0.5 * w, 0.22 - 0.42 * h), (0, 0.2)]),
                    "secondary"))
    return out


def _table(p: dict, x, y, w: float, h: float) -> list:
    out = []
    n_legs = p["legs"]
    xs = {0: [-0.45, 0.45], 1: [-0.45, 0.0, 0.45], 2: [0.0]}[n_legs]
    for lx in xs:
        hw = 0.06 if n_legs != 2 else 0.09
        out.append((_box(x, y, lx * w, 0.3, hw, 0.42), "dark"))
    if n_legs == 2:
        out.append((_box(x, y, 0, 0.72, 0.3 * w, 0.05), "dark"))
    out.append((_box(x, y, 0, -0.15 * h, 0.6 * w, 0.09, 0.02), "primary"))
    if p["shelf"] == 1:
        out.append((_box(x, y, 0, 0.4, 0.5 * w, 0.05), "secondary"))
    return out


_FAMILIES = {"mug": _mug, "lamp": _lamp, "bottle": _bottle, "chair": _chair, "vase": _vase, "hat": _hat,
             "bag": _bag, "table": _table}


def _pattern_mask(pattern: int, x, y, px: float):
    if pattern == 0:
        return np.zeros_like(x)
    if pattern == 1:  # stripes
        return np.clip(0.5 + np.sin(y * 14.0) / (14.0 * px) * 0.5, 0, 1) > 0.5
    if pattern == 2:  # dots
        d = 0.22
        gx = (x / d) - np.round(x / d)
        gy = (y / d) - np.round(y / d)
        return (np.sqrt(gx**2 + gy**2) * d) < 0.06
    d = 0.2  # checker
    return ((np.floor(x / d) + np.floor(y / d)) % 2) == 0


def render(ident: Identity, style: Style, view: View, size: int) -> np.ndarray:
    """Render one image as uint8 HxWx3."""
    px = 2.0 / size
    lin = (np.arange(size, dtype=np.float32) + 0.5) * px - 1.0
    gy, gx = np.meshgrid(lin, lin, indexing="ij")
    # background with a soft vertical gradient (context the identity encoder must learn to ignore)
    bg = np.asarray(BACKGROUNDS[view.background][1], np.float32)
    img = bg[None, None, :] * (1.0 - 0.12 * (gy[..., None] + 1) / 2)
    # inverse camera transform: object coordinates of each pixel
    th = np.deg2rad(view.angle)
    ct, st = np.cos(th), np.sin(th)
    xs, ys = gx - view.offset, gy
    ox = (ct * xs + st * ys) / view.scale
    oy = (-st * xs + ct * ys) / view.scale
    opx = px / view.scale
    pal = PALETTES[style.palette]
    primary = np.asarray(pal[1], np.float32)
    secondary = np.asarray(pal[2], np.float32)
    pat = _pattern_mask(style.pattern, ox, oy, opx)
    prim_rgb = np.where(pat[..., None], secondary[None, None], primary[None, None])
    obj_alpha = np.zeros((size, size), np.float32)
    for sdf, role in _shapes(ident, ox, oy):
        cov = np.clip(0.5 - sdf / opx, 0.0, 1.0)[..., None]
        if role == "primary":
            col = prim_rgb
        elif role == "secondary":
            col = secondary[None, None]
        elif role == "dark":
            col = np.asarray(DARK, np.float32)[None, None]
        else:  # 'none' punches the background back in (a hole)
            col = bg[None, None]
        img = img * (1 - cov) + col * cov
        obj_alpha = np.maximum(obj_alpha, cov[..., 0]) if role != "none" else obj_alpha * (1 - cov[..., 0])
    # lighting: a horizontal gradient on the object; glossy finish adds a specular highlight
    shade = 1.0 + 0.22 * view.light * gx
    img = img * (1 - obj_alpha[..., None]) + img * shade[..., None] * obj_alpha[..., None]
    if style.finish == 1:
        hx, hy = 0.25 * np.sign(view.light or 1.0), -0.25
        spec = np.exp(-(((ox - hx) ** 2) + (oy - hy) ** 2) / 0.02) * obj_alpha
        img = img + spec[..., None] * 120.0
    return np.clip(img, 0, 255).astype(np.uint8)
