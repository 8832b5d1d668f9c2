"""Redraw docs/img/try-it.png: `ragar serve --demo` on the demo models (runs/demo, from `make demo`),
one request from a catalog item and one from an uploaded image, screenshotted in headless Chromium.

    .venv/bin/python scripts/try_it_screenshot.py [--photo PATH] [--out docs/img/try-it.png]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photo", type=Path, help="an image to upload as the reference (default: matplotlib's sample "
                    "present, an RGBA product cut-out)")
    ap.add_argument("--demo", type=Path, default=ROOT / "runs" / "demo")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "try-it.png")
    ap.add_argument("--arm", default="ragar", help="show a user the experiment assigns to this arm (default: "
                    "ragar, the product; the page's first user may land in a baseline arm)")
    args = ap.parse_args()
    import matplotlib
    from playwright.sync_api import expect, sync_playwright

    from serving.server import free_port, wait_ready

    photo = args.photo or Path(matplotlib.get_data_path()) / "sample_data" / "Minduka_Present_Blue_Pack.png"
    tmp = Path(tempfile.mkdtemp())
    port = free_port()
    cmd = [sys.executable, "-m", "ragar.cli", "serve", "--demo", "--models", str(args.demo), "--data",
           str(args.demo / "world"), "--db", f"sqlite:///{tmp / 'events.db'}", "--images-dir", str(tmp / "images"),
           "--experiments", str(ROOT / "configs" / "experiments.yaml"), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, timeout_s=600)
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                                  args=["--no-sandbox", "--disable-gpu"])
            page = b.new_page(viewport={"width": 1200, "height": 1000})
            page.goto(url + "/")
            expect(page.locator("#status")).to_have_text("ready", timeout=60_000)
            page.select_option("#user", _user_in_arm(page, args.arm))
            page.set_input_files("#upload", str(photo))
            expect(page.locator("#status")).to_contain_text("your photo")
            page.fill("#seed", "7")
            page.click("#generate")
            expect(page.locator("#status")).to_contain_text("generated", timeout=300_000)
            # "generated" is set when the response arrives; the images load after it, and a
            # screenshot taken at once shows empty cards
            page.wait_for_function("[...document.images].filter(i => i.offsetParent)"
                                   ".every(i => i.complete && i.naturalWidth > 0)", timeout=60_000)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            b.close()
        print(f"wrote {args.out}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


def _user_in_arm(page, arm: str) -> str:
    """The first user in the page's list whom the active experiment assigns to ``arm``."""
    from serving.experiments import active_experiment, load_experiments

    exp = active_experiment(load_experiments(ROOT / "configs" / "experiments.yaml"))
    users = page.eval_on_selector_all("#user option", "els => els.map(e => e.value)")
    for u in users:
        if exp.assign(u).name == arm:
            return u
    raise SystemExit(f"no user of the page is in arm {arm!r} of {exp.name}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
