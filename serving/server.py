"""Running the app: ``ragar serve`` in the foreground, or a loopback server in a thread (tests,
benchmarks, the simulator), always real uvicorn over real sockets."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import httpx
import uvicorn

from serving.app import create_app
from serving.service import Service
from serving.settings import ServingSettings


def serve(settings: ServingSettings, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout_s: float = 120.0) -> None:
    """Poll ``/readyz`` until it answers 200 (models loaded, store reachable)."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/readyz", timeout=2.0)
            if r.status_code == 200:
                return
            last = f"{r.status_code} {r.text}"
        except httpx.TransportError as e:
            last = repr(e)
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout_s:g} s (last answer: {last})")


@contextmanager
def serve_in_thread(service: Service | None = None, settings: ServingSettings | None = None,
                    host: str = "127.0.0.1"):
    """Yield the base URL of a uvicorn server on a free loopback port; stop it on exit."""
    sock = socket.socket()
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings, service=service), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    url = f"http://{host}:{port}"
    try:
        wait_ready(url)
        yield url
    finally:
        server.should_exit = True
        t.join(timeout=30)
        sock.close()
