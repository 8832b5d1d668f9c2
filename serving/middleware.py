"""Plain-ASGI middleware around the API: body limit, security headers, metrics, last-resort errors.

Plain ASGI (not ``BaseHTTPMiddleware``), so endpoints still see a client's disconnect and can
cancel its work, and so the body limit is enforced while the body is read, before any parsing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

log = logging.getLogger("ragar.serving")

#: every response: no sniffing, no framing, no referrer leaks; JSON needs no other source at all
BASE_HEADERS = {
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"referrer-policy": b"no-referrer",
    b"cross-origin-opener-policy": b"same-origin",
}
API_CSP = b"default-src 'none'; frame-ancestors 'none'"


async def send_json(send, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
    raw = json.dumps(body).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
            (b"connection", b"close")] + [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": raw})


class BodyLimit:
    """Refuse a request body over ``limit()`` bytes with 413 before the app parses any of it: by
    its Content-Length, or as soon as a streamed (chunked) body passes the limit. The body is read
    here (at most ``limit()`` bytes held) and handed on; later ``receive`` calls go to the server,
    so a disconnect still reaches the endpoint.

    Before a 413 the rest of the body is read and dropped (up to ``DRAIN_BYTES``, nothing kept),
    so that a client still sending gets the answer instead of a reset connection; a body declared
    larger than that is answered at once (and a client that sent ``Expect: 100-continue`` never
    sends it)."""

    DRAIN_BYTES = 32 * 2**20

    def __init__(self, app, limit: Callable[[], int]):
        self.app, self.limit = app, limit

    async def _refuse(self, receive, send, message: str, drain: bool) -> None:
        received = 0
        while drain and received <= self.DRAIN_BYTES:
            msg = await receive()
            if msg["type"] != "http.request":
                return  # the client left: nobody to answer
            received += len(msg.get("body", b""))
            if not msg.get("more_body", False):
                break
        await send_json(send, 413, {"detail": message})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit()
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await send_json(send, 400, {"detail": "Content-Length is not a whole number"})
            if int(declared) > limit:
                return await self._refuse(receive, send, f"request body of {int(declared)} bytes is larger than "
                                          f"the {limit} byte limit", drain=int(declared) <= self.DRAIN_BYTES)
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":  # the client left before the body was complete
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                more = msg.get("more_body", False)
                return await self._refuse(receive, send, f"request body is larger than the {limit} byte limit", more)
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class SecurityHeaders:
    """Add the base headers to every response, and a deny-all CSP where the route set none."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(msg):
            if msg["type"] == "http.response.start":
                have = {k.lower() for k, _ in msg.get("headers", [])}
                extra = [(k, v) for k, v in BASE_HEADERS.items() if k not in have]
                if b"content-security-policy" not in have:
                    extra.append((b"content-security-policy", API_CSP))
                msg = {**msg, "headers": [*msg.get("headers", []), *extra]}
            await send(msg)

        await self.app(scope, receive, with_headers)


class ErrorGuard:
    """The last line: an exception nobody handled becomes a plain JSON 500 without internals (and
    is logged), instead of a traceback page or a reset connection."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, receive, tracking)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await send_json(send, 500, {"detail": "internal error (logged on the server)"})


class Metrics:
    """Counts and times every request by route template and experiment arm."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            svc = getattr(scope.get("app").state, "service", None) if scope.get("app") else None
            if svc is not None:
                path = getattr(scope.get("route"), "path", "unmatched")
                arm = (scope.get("state") or {}).get("arm", "-")
                svc.metrics.requests.labels(path, arm, str(status["code"])).inc()
                svc.metrics.latency.labels(path, arm).observe(time.perf_counter() - t0)
