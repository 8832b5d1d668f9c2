"""The try-it page end to end in headless Chromium (Debian's), driven by Playwright."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.serving.helpers import chromium

SCREENSHOTS = Path(__file__).resolve().parents[2] / "runs" / "screenshots"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser():
    exe = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=FLAGS)
        yield b
        b.close()


def test_try_it_page_generates_shows_weights_and_sends_feedback(live, browser):
    with live(demo=True) as (url, svc):
        page = browser.new_page(viewport={"width": 1200, "height": 1100})
        assert page.goto(url + "/").headers["content-security-policy"].startswith("default-src 'self'")
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)  # CSP violations too
        page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.goto(url + "/")
        expect(page.locator("#status")).to_have_text("ready")
        user = svc.users["user_id"][0]
        page.select_option("#user", user)
        page.fill("#n", "3")
        page.click("#generate")
        page.wait_for_selector(".candidate", timeout=60_000)
        assert page.locator(".candidate").count() == 3
        assert page.locator(".candidate.chosen").count() == 1
        assert page.locator("#history .card").count() > 0
        assert "fit " in page.locator(".candidate").first.inner_text()
        meta = page.inner_text("#meta")
        request_id = meta.split()[1]
        page.locator(".candidate").nth(1).locator(".fb-like").click()
        expect(page.locator("#status")).to_contain_text("feedback stored", timeout=30_000)
        fb = svc.store.feedback_frame()
        assert fb.rows(named=True)[0]["request_id"] == request_id and fb["event"].to_list() == ["like"]
        # every image on the page loaded (naturalWidth > 0)
        assert page.evaluate("[...document.images].filter(i => i.offsetParent && !i.naturalWidth).length") == 0
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOTS / "try-it.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000

        # a photo of one's own as the reference; seed left empty (random), n left empty (the arm's)
        photo = SCREENSHOTS / "upload.png"
        y, x = np.mgrid[0:96, 0:96]
        Image.fromarray(np.stack([x * 2, y * 2, 255 - x - y], -1).astype(np.uint8)).save(photo)
        page.fill("#n", "")
        page.set_input_files("#upload", str(photo))
        expect(page.locator("#status")).to_contain_text("your photo upload.png")
        page.click("#generate")
        expect(page.locator("#ref-id")).to_have_text("your photo (upload.png)", timeout=60_000)
        expect(page.locator("#status")).to_contain_text("generated")
        row = svc.store.exposures_frame().sort("created_at").rows(named=True)[-1]
        assert row["reference_item_id"] is None and f"seed {row['seed']}" in page.inner_text("#meta")
        assert row["n"] == svc.personalizer.config.n  # the arm's own n
        assert page.evaluate("document.getElementById('ref-img').naturalWidth") == 96

        page.click("#tab-rate")
        page.select_option("#rate-user", user)
        page.click("#new-pair")
        expect(page.locator("#rate-status")).to_have_text("choose, then submit", timeout=60_000)
        page.click("#submit-judgment")  # nothing chosen yet: refused on the page, nothing stored
        assert "answer both" in page.inner_text("#rate-status") and svc.store.judgments_frame().height == 0
        page.check("input[name=pref][value=a]")
        page.check("input[name=ident][value=b]")
        page.click("#submit-judgment")
        expect(page.locator("#rate-status")).to_contain_text("judgment stored", timeout=30_000)
        j = svc.store.judgments_frame().rows(named=True)
        assert len(j) == 1 and (j[0]["preference_choice"], j[0]["identity_choice"]) == ("a", "b")
        page.screenshot(path=str(SCREENSHOTS / "rate.png"), full_page=True)
        assert errors == []


def test_page_outside_demo_mode_asks_for_a_key(live, browser):
    from tests.serving.conftest import TOKENS

    with live() as (url, _):
        page = browser.new_page()
        page.goto(url + "/")
        assert page.get_attribute("#demo-key", "content") == ""  # no key in the page outside demo mode
        expect(page.locator("#status")).to_contain_text("enter an API key")
        assert page.is_visible("#key-box")
        page.fill("#api-key", "rgr_wrong")
        page.click("#save-key")
        expect(page.locator("#status")).to_contain_text("401")
        page.fill("#api-key", TOKENS["admin"])
        page.click("#save-key")
        expect(page.locator("#status")).to_have_text("ready")
        assert page.locator("#user option").count() > 0
