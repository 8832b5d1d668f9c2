"""API keys, scopes and per-key rate limits.

Every caller of ``/v1`` is untrusted until it shows a key: ``Authorization: Bearer <token>``. Keys
are random 256-bit tokens (``rgr_`` + URL-safe base64); the service keeps only their SHA-256 (a
hash of a high-entropy secret needs no salt or slow KDF: there is nothing to guess), so a leaked
key file or environment grants nothing. A key has a name (recorded with every request it makes,
so feedback and judgments can be bound to the key that made the request), scopes, and a token
bucket that answers 429 with Retry-After when it runs dry.

Scopes: ``generate`` (generate, compare, preference weights, the item list), ``feedback``
(feedback and judgments on the key's own requests), ``report`` (experiment reports and
definitions without salts, the user list, ``/metrics``), ``admin`` (everything, any key's
requests, salts and per-user assignments).
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serving.yamlfile import read_model

Scope = Literal["generate", "feedback", "report", "admin"]
SCOPES: tuple[str, ...] = ("generate", "feedback", "report", "admin")
TOKEN_PREFIX = "rgr_"
MAX_TOKEN_CHARS = 256


class ApiKeySpec(BaseModel):
    """One key as it is kept at rest: its name, the SHA-256 of its token, what it may do."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the token (never the token)")
    scopes: list[Scope] = Field(min_length=1)
    rate_per_s: float | None = Field(None, gt=0, description="sustained requests per second (default: settings)")
    burst: int | None = Field(None, ge=1, description="requests allowed at once (default: settings)")


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keys: list[ApiKeySpec] = Field(default_factory=list)


class KeysError(ValueError):
    """A keys file that cannot be used; the message names the file and the key."""


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def load_keys_file(path: Path) -> list[ApiKeySpec]:
    return read_model(path, KeysFile, KeysError).keys


def add_key(path: Path, name: str, scopes: list[str], rate_per_s: float | None = None,
            burst: int | None = None) -> str:
    """Create a key, append its hash to the keys file (created if missing) and return the token,
    which is shown this once and stored nowhere."""
    path = Path(path)
    keys = load_keys_file(path) if path.exists() else []
    if any(k.name == name for k in keys):
        raise KeysError(f"{path}: a key named {name!r} exists already")
    token = new_token()
    try:
        spec = ApiKeySpec(name=name, sha256=hash_token(token), scopes=scopes, rate_per_s=rate_per_s, burst=burst)
    except ValidationError as e:
        raise KeysError("; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())) from None
    keys.append(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump({"keys": [k.model_dump(exclude_none=True) for k in keys]}, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)
    return token


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; :meth:`take` spends one or says how long to wait."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic):
        self.rate, self.burst, self.clock = float(rate), int(burst), clock
        self.tokens = float(burst)
        self.at = clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        """0.0 when a token was spent; otherwise the seconds until one is there (nothing spent)."""
        with self._lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return 0.0
            return (1.0 - self.tokens) / self.rate


@dataclass
class Caller:
    """Who is calling: the key's name and scopes (the token itself is never kept)."""

    name: str
    scopes: frozenset[str]
    bucket: TokenBucket = field(repr=False)

    def may(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    @property
    def admin(self) -> bool:
        return "admin" in self.scopes


class KeyRing:
    """The keys one service accepts, looked up by the hash of the presented token."""

    def __init__(self, specs: list[ApiKeySpec], rate_per_s: float, burst: int):
        self.default_rate, self.default_burst = rate_per_s, burst
        self._by_hash: dict[str, Caller] = {}
        names = set()
        for s in specs:
            if s.name in names:
                raise KeysError(f"API key name {s.name!r} repeats")
            names.add(s.name)
            self._add(s)

    def _add(self, s: ApiKeySpec) -> None:
        bucket = TokenBucket(s.rate_per_s or self.default_rate, s.burst or self.default_burst)
        self._by_hash[s.sha256] = Caller(s.name, frozenset(s.scopes), bucket)

    def add_token(self, name: str, token: str, scopes: list[str], rate_per_s: float | None = None,
                  burst: int | None = None) -> None:
        """Accept a token created in this process (the demo key, tests)."""
        self._add(ApiKeySpec(name=name, sha256=hash_token(token), scopes=scopes, rate_per_s=rate_per_s, burst=burst))

    def __len__(self) -> int:
        return len(self._by_hash)

    def verify(self, token: str) -> Caller | None:
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        # the lookup is keyed by a hash of the secret: its timing says nothing about the token
        return self._by_hash.get(hash_token(token))


def retry_after(seconds: float) -> str:
    """A Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
