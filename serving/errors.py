"""Error bodies that are always safe to render: JSON without NaN, valid UTF-8, and short.

Whatever a caller sent (NaN, 1e400, a lone surrogate, a 200 MB string) may come back in an error
only as a short, escaped excerpt, so rendering the error can never fail (no 500) and never echoes
the whole input back.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

EXCERPT_CHARS = 80
DETAIL_CHARS = 500


def safe_text(s: str, limit: int = DETAIL_CHARS) -> str:
    """Valid UTF-8 (lone surrogates and control characters escaped), cut to ``limit`` characters."""
    cut = s if len(s) <= limit else s[:limit] + f"... ({len(s)} characters)"
    out = cut.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in out)


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str | int | bool | None:
    """A JSON-safe stand-in for an input value: small ints and bools as they are, anything else as
    a short escaped ``repr``."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) < 2**53:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return safe_text(repr(value), limit)
    if isinstance(value, str):
        return safe_text(value, limit)
    return safe_text(repr(value), limit)


def _loc(loc) -> list[str | int]:
    return [p if isinstance(p, int) and not isinstance(p, bool) else safe_text(str(p), 64) for p in loc]


def validation_body(errors: list[dict]) -> dict:
    """FastAPI's 422 shape (``detail``: list of ``{type, loc, msg, input}``), every field made safe."""
    out = []
    for e in errors[:20]:
        item = {"type": safe_text(str(e.get("type", "invalid")), 64), "loc": _loc(e.get("loc", ())),
                "msg": safe_text(str(e.get("msg", "invalid value")))}
        if "input" in e:
            item["input"] = excerpt(e["input"])
        ctx = e.get("ctx")
        if isinstance(ctx, dict):
            item["ctx"] = {safe_text(str(k), 64): excerpt(v) for k, v in list(ctx.items())[:5]}
        out.append(item)
    return {"detail": out}


async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    try:
        return JSONResponse(validation_body(list(exc.errors())), status_code=422)
    except Exception:  # rendering must not fail; say what we can
        return JSONResponse({"detail": [{"type": "invalid", "loc": [], "msg": "the request is not valid"}]},
                            status_code=422)


async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail
    body = validation_body(detail)["detail"] if isinstance(detail, list) else safe_text(str(detail))
    return JSONResponse({"detail": body}, status_code=exc.status_code, headers=getattr(exc, "headers", None))
