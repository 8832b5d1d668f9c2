"""What endpoints depend on: the loaded service, and a caller with the scope the route needs."""

from __future__ import annotations

from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving.schemas import ErrorOut
from serving.security import Caller, KeyRing, retry_after
from serving.service import Service

bearer = HTTPBearer(auto_error=False, scheme_name="api_key",
                    description="an API key: `Authorization: Bearer rgr_...` (see docs/SERVING.md, Security)")

ERR = {"model": ErrorOut}
AUTH_ERRORS = {401: {"description": "no key, or a key the service does not accept", **ERR},
               403: {"description": "the key lacks the scope, or the request is another key's or user's", **ERR},
               429: {"description": "the key's rate limit (Retry-After says when)", **ERR}}


def get_service(request: Request) -> Service:
    svc = getattr(request.app.state, "service", None)
    if svc is None or not svc.ready:
        raise HTTPException(503, "models are still loading", headers={"Retry-After": "5"})
    return svc


def authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None, scope: str) -> Caller:
    """The caller behind the bearer token, with ``scope`` and a token left in its bucket; else 401,
    403 or 429."""
    keys: KeyRing = request.app.state.keys
    if credentials is None:
        raise HTTPException(401, "an API key is required: send 'Authorization: Bearer <key>'",
                            headers={"WWW-Authenticate": "Bearer"})
    caller = keys.verify(credentials.credentials)
    if caller is None:
        raise HTTPException(401, "this API key is not accepted",
                            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    if not caller.may(scope):
        raise HTTPException(403, f"key {caller.name!r} does not have the {scope!r} scope")
    wait = caller.bucket.take()
    if wait > 0:
        raise HTTPException(429, f"rate limit of key {caller.name!r} reached",
                            headers={"Retry-After": retry_after(wait)})
    return caller


def require(scope: str):
    """A dependency: the authenticated caller, if its key has ``scope`` (or ``admin``)."""

    async def dependency(request: Request,
                         credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> Caller:
        return authenticate(request, credentials, scope)

    dependency.__name__ = f"require_{scope}"
    return dependency


def metrics_caller(request: Request, credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
    """``/metrics`` needs a ``report`` key unless the settings open it to a trusted scrape network."""
    if not request.app.state.settings.metrics_open:
        authenticate(request, credentials, "report")
