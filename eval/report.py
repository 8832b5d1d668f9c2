"""Self-contained HTML reports (plots and image grids embedded as PNG data URIs) and JSON results."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
from PIL import Image

# headless: the reports are files. pyplot itself is imported where a figure is closed, not here:
# it costs ~0.5 s of start-up that every ``ragar`` command paid through this module
matplotlib.use("Agg")

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
figure{margin:1em 0}figcaption{color:#555;font-size:90%}"""


def _png_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return html.escape(str(v))


class HtmlReport:
    """Append sections, then ``write(path)``; everything is inline so the file can be mailed."""

    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = []

    def heading(self, text: str, level: int = 2) -> HtmlReport:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")
        return self

    def paragraph(self, text: str) -> HtmlReport:
        self.parts.append(f"<p>{html.escape(text)}</p>")
        return self

    def table(self, rows: list[dict], caption: str | None = None) -> HtmlReport:
        if not rows:
            return self
        cols = list(rows[0])
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self.parts.append(f"<table>{cap}<tr>{head}</tr>{body}</table>")
        return self

    def figure(self, fig: Figure, caption: str = "") -> HtmlReport:
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        self.parts.append(f'<figure><img src="{uri}"><figcaption>{html.escape(caption)}</figcaption></figure>')
        return self

    def image(self, img: Image.Image | np.ndarray, caption: str = "") -> HtmlReport:
        if isinstance(img, np.ndarray):
            img = Image.fromarray(img)
        self.parts.append(f'<figure><img src="{_png_uri(img)}" style="image-rendering:pixelated">'
                          f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        return self

    def gallery(self, tiles: list[tuple[Image.Image | np.ndarray, str]], size: int = 96,
                highlight: int | None = None) -> HtmlReport:
        """A row of images, each with its own caption (``highlight`` outlines one of them)."""
        cells = []
        for i, (img, cap) in enumerate(tiles):
            if isinstance(img, np.ndarray):
                img = Image.fromarray(img)
            border = "3px solid #d33" if i == highlight else "1px solid #ccc"
            cells.append(f'<figure style="display:inline-block;margin:4px;text-align:center">'
                         f'<img src="{_png_uri(img)}" width="{size}" height="{size}" '
                         f'style="image-rendering:pixelated;border:{border}">'
                         f'<figcaption style="max-width:{size + 20}px">{html.escape(cap)}</figcaption></figure>')
        self.parts.append("<div>" + "".join(cells) + "</div>")
        return self

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}"
                        f"</title><style>{_CSS}</style></head><body><h1>{html.escape(self.title)}</h1>"
                        + "\n".join(self.parts) + "</body></html>")
        return path


def write_json(obj: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str))
    return path
