"""The API against untrusted callers, over real HTTP: keys and scopes, requests bound to their key
and user, rate limits, the body limit, error bodies that leak nothing, headers, offline docs,
CORS, and every form of uploaded reference a client sends."""

import base64
import io
import socket

import httpx
import numpy as np
import pytest
from PIL import Image

from serving.security import ApiKeySpec, hash_token, new_token
from tests.serving.conftest import KEYS, auth


def _png(arr: np.ndarray, mode: str | None = None, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(buf, format=fmt)
    return buf.getvalue()


def _photo(h: int = 64, w: int = 64) -> np.ndarray:
    """A stand-in photo: smooth gradients and a disc, never one flat colour."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), (x + y) * 127 // max(1, h + w - 2)], -1)
    img[(y - h / 2) ** 2 + (x - w / 2) ** 2 < (min(h, w) / 4) ** 2] = (200, 40, 40)
    return img.astype(np.uint8)


@pytest.fixture
def api(live):
    with live() as (url, svc), httpx.Client(base_url=url, timeout=60, headers=auth("app")) as c:
        c.svc, c.url = svc, url
        c.user, c.item = svc.users["user_id"][0], svc.items["item_id"][0]
        yield c


def _gen(c, headers=None, **kw):
    body = {"user_id": c.user, "reference_item_id": c.item, "n": 1, "seed": 1, **kw}
    return c.post("/v1/generate", json=body, **({"headers": headers} if headers else {}))


def test_keys_and_scopes(api):
    anon = httpx.Client(base_url=api.url, timeout=60)
    r = anon.post("/v1/generate", json={"user_id": api.user, "reference_item_id": api.item})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    bad = anon.post("/v1/generate", json={"user_id": api.user, "reference_item_id": api.item},
                    headers={"Authorization": f"Bearer {new_token()}"})
    assert bad.status_code == 401 and "not accepted" in bad.text
    assert anon.get("/v1/users").status_code == 401 and anon.get("/metrics").status_code == 401
    assert anon.get("/v1/experiments/weighting/report").status_code == 401
    # the reporting key reads reports but cannot generate; the app key generates but reads no reports
    assert _gen(api, headers=auth("reporter")).status_code == 403
    assert api.get("/v1/experiments/weighting/report").status_code == 403
    assert api.get(f"/v1/experiments/weighting/assignments/{api.user}").status_code == 403  # admin only
    assert api.get(f"/v1/experiments/weighting/assignments/{api.user}", headers=auth()).status_code == 200
    # what stays open: health, readiness, the page, the docs, catalog images, a request's own images
    g = _gen(api).json()
    for path in ("/healthz", "/readyz", "/", "/docs", "/redoc", "/openapi.json", f"/v1/items/{api.item}/image",
                 g["candidates"][0]["url"]):
        assert anon.get(path).status_code == 200, path
    assert api.svc.store.exposure(g["request_id"])["api_key"] == "app"  # the request records its key


def test_feedback_and_judgments_are_bound_to_the_request(api):
    g = _gen(api).json()
    body = {"request_id": g["request_id"], "user_id": api.user, "image_index": 0, "event": "like",
            "idempotency_key": "bound-0001"}
    r = api.post("/v1/feedback", json=body, headers=auth("other"))
    assert r.status_code == 403 and "another API key" in r.text
    other_user = api.svc.users["user_id"][1]
    r = api.post("/v1/feedback", json={**body, "user_id": other_user})
    assert r.status_code == 403 and "another user" in r.text
    assert api.svc.store.feedback_frame().height == 0  # neither was stored
    assert api.post("/v1/feedback", json=body).status_code == 200
    assert api.post("/v1/feedback", json={**body, "idempotency_key": "bound-0002"}, headers=auth()).status_code == 200
    pair = api.post("/v1/compare", json={"user_id": api.user, "reference_item_id": api.item, "seed": 3}).json()
    j = {"request_a": pair["a"]["request_id"], "request_b": pair["b"]["request_id"], "preference_choice": "a",
         "identity_choice": "b", "idempotency_key": "judge-bound-1"}
    assert api.post("/v1/judgments", json=j, headers=auth("other")).status_code == 403
    assert api.post("/v1/judgments", json=j).status_code == 200
    # a reused idempotency key with another body: 409, as for feedback
    again = api.post("/v1/judgments", json={**j, "preference_choice": "b"})
    assert again.status_code == 409 and "another judgment" in again.text
    assert api.post("/v1/feedback", json={**body, "event": "click"}).status_code == 409
    assert api.svc.store.judgments_frame().height == 1


def test_rate_limit_is_429_with_retry_after(live):
    slow = new_token()
    keys = [*KEYS, ApiKeySpec(name="slow", sha256=hash_token(slow), scopes=["report"], rate_per_s=0.5, burst=2)]
    with live(api_keys=keys) as (url, _):
        codes = [httpx.get(f"{url}/v1/users", headers={"Authorization": f"Bearer {slow}"}) for _ in range(3)]
        assert [r.status_code for r in codes] == [200, 200, 429]
        assert codes[2].headers["retry-after"] == "2" and "rate limit" in codes[2].text
        assert httpx.get(f"{url}/v1/users", headers=auth("reporter")).status_code == 200  # per key, not global


def test_body_limit_holds_before_parsing(live):
    with live(max_upload_bytes=10_000, max_body_bytes=20_000) as (url, svc):
        big = b'{"user_id": "u", "surprise": "' + b"x" * 50_000 + b'"}'
        r = httpx.post(f"{url}/v1/generate", content=big, headers={**auth("app"), "content-type": "application/json"})
        assert r.status_code == 413 and "20000 byte limit" in r.text and len(r.content) < 300

        def chunks():  # no Content-Length: the limit must hold while the body streams in
            yield b'{"user_id": "u", "surprise": "'
            for _ in range(40):
                yield b"y" * 1000
            yield b'"}'

        r = httpx.post(f"{url}/v1/generate", content=chunks(), headers={**auth("app"),
                                                                        "content-type": "application/json"})
        assert r.status_code == 413 and len(r.content) < 300
        # under the limit, an unknown field is a 422 that shows only an excerpt of what was sent
        small = b'{"user_id": "u", "reference_item_id": "x", "surprise": "' + b"z" * 15_000 + b'"}'
        r = httpx.post(f"{url}/v1/generate", content=small, headers={**auth("app"),
                                                                     "content-type": "application/json"})
        assert r.status_code == 422 and len(r.content) < 1000 and "15000 characters" in r.text
        assert svc.store.exposures_frame().height == 0


def test_content_length_lies_are_refused(live):
    with live() as (url, _):
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n"
                      b"Content-Type: application/json\r\n\r\n{}")
            head = s.recv(4096).decode()
        assert head.startswith("HTTP/1.1 413")


def test_errors_leak_nothing(api):
    r = _gen(api, reference_item_id=None, reference_image=base64.b64encode(b"GIF89a not really").decode())
    assert r.status_code == 400 and "0x" not in r.text and "not a readable image" in r.text
    r = api.post("/v1/generate", content=b"[" * 100_000, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500
    r = api.post("/v1/generate", content=b'{"user_id": "\\ud800", "reference_item_id": "x"}',
                 headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["input"] == "\\ud800"


def test_headers_docs_offline_and_cors(live):
    with live() as (url, _):
        page = httpx.get(f"{url}/")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
        assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
        js = httpx.get(f"{url}/v1/users", headers=auth())
        assert js.headers["content-security-policy"].startswith("default-src 'none'")
        for path in ("/docs", "/redoc"):
            doc = httpx.get(f"{url}{path}")
            assert doc.status_code == 200 and "cdn" not in doc.text and "googleapis" not in doc.text
            assert "'sha256-" in doc.headers["content-security-policy"] or path == "/redoc"
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
            assert httpx.get(f"{url}/docs-assets/{asset}").status_code == 200
        pre = httpx.options(f"{url}/v1/generate", headers={"Origin": "https://evil.example",
                                                           "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in pre.headers  # CORS is off by default
    with live(cors_origins=["https://shop.example"]) as (url, _):
        pre = httpx.options(f"{url}/v1/generate", headers={"Origin": "https://shop.example",
                                                           "Access-Control-Request-Method": "POST",
                                                           "Access-Control-Request-Headers": "authorization"})
        assert pre.headers["access-control-allow-origin"] == "https://shop.example"
        other = httpx.options(f"{url}/v1/generate", headers={"Origin": "https://evil.example",
                                                             "Access-Control-Request-Method": "POST"})
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"


def _b64_forms(raw: bytes) -> dict[str, str]:
    std = base64.b64encode(raw).decode()
    return {"plain": std, "data-uri": "data:image/png;base64," + std,
            "wrapped": "\n".join(std[i:i + 76] for i in range(0, len(std), 76)),
            "url-safe-unpadded": base64.urlsafe_b64encode(raw).decode().rstrip("="),
            "data-uri-wrapped": "data:image/png;base64,\r\n" + "\r\n".join(std[i:i + 64]
                                                                            for i in range(0, len(std), 64))}


@pytest.mark.parametrize("form", list(_b64_forms(b"x")))
def test_base64_in_every_form_clients_send(api, form):
    raw = _png(_photo())
    while b"+" not in base64.b64encode(raw) or b"/" not in base64.b64encode(raw):  # both alphabets differ
        raw += b"\0"
    r = _gen(api, reference_item_id=None, reference_image=_b64_forms(raw)[form])
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("text,words", [
    ("data:image/png,abcd", "must be base64"),
    ("aGVsbG8*d29ybGQ=", "character '*' at position 8"),
    ("ab+c-d==", "mixes the standard"),
    ("aGVsb", "cut off"),
    ("ab=cd===", "padding appears before the end"),
])
def test_bad_base64_says_why(api, text, words):
    r = _gen(api, reference_item_id=None, reference_image=text)
    assert r.status_code == 400 and words in r.text, r.text


@pytest.mark.parametrize("name,make", [
    ("grayscale", lambda: _png(_photo()[..., 0])),
    ("rgba", lambda: _png(np.dstack([_photo(), np.full((64, 64), 128, np.uint8)]))),
    ("16-bit", lambda: _png(_photo()[..., 0].astype(np.uint16) * 257)),
    ("jpeg", lambda: _png(_photo(), fmt="JPEG")),
    ("tiny", lambda: _png(_photo(3, 2))),
    ("large", lambda: _png(_photo(1500, 2000), fmt="JPEG")),
])
def test_any_reference_image_works(api, name, make):
    r = _gen(api, reference_item_id=None, reference_image=base64.b64encode(make()).decode())
    assert r.status_code == 200, (name, r.text)
    assert r.json()["reference_source"].startswith("upload")


@pytest.mark.parametrize("make", [
    lambda: _png(np.full((64, 64, 3), 255, np.uint8)),  # all white
    lambda: _png(np.full((64, 64), 65535, np.uint16)),  # a 16-bit PNG that is all white
    lambda: _png(np.zeros((1, 1, 3), np.uint8)),  # one pixel
])
def test_blank_images_are_refused(api, make):
    r = _gen(api, reference_item_id=None, reference_image=base64.b64encode(make()).decode())
    assert r.status_code == 400 and "blank" in r.text and "flat colour" in r.text
    assert api.svc.store.exposures_frame().height == 0
