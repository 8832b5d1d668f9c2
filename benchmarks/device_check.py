"""The device check: what one accelerator does with RAGAR's models, beside the CPU of the same machine.

``scripts/device-check.sh`` runs it on a GPU machine that has torch, transformers, accelerate,
safetensors, numpy, pillow, httpx and little else: it reads the inputs ``benchmarks.device_export``
wrote (``.device/``), the shipped generator and NearID from the working tree, and installs the
carried wheels (diffusers, efficientnet-lite-pytorch, pydantic, starlette, uvicorn). polars,
faiss, LightGBM, SQLAlchemy and FastAPI are neither needed nor imported.

One table, each figure on the accelerator and on the CPU where the CPU can do it in the time:

* generation images/s at batch 1, 8, 64, 256 (25 DDIM steps, three guidance branches);
* one best-of-4 request's latency: 4 candidates, NearID identity and the ranker's fit, the
  choice, and the 4 PNGs;
* serving: requests/s and p50/p99 latency at 32 and 256 concurrent HTTP clients on loopback; each
  request is one best-of-4 request through the project's micro-batcher (``serving.batching``,
  with the device's default batch size, wait and queue) behind uvicorn. The full app adds
  authentication, SQLite writes and per-request history building, which need the packages that
  cannot travel; docs/SCALING.md says what that costs on the CPU;
* generator training steps/s (``ragar.generation.train.train_generator``, the demo recipe).

Writes ``benchmarks/results/device-<card>.json`` (and a copy under ``$OUT`` when set).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "ragar" / "weights"  # the shipped generator and NearID (ragar.generation.loading needs polars)


def _inputs(bundle: Path) -> dict[str, torch.Tensor]:
    """The exported tensors, widened back (they travel as float16 and int32)."""
    return {k: v.float() if v.is_floating_point() else v.long() if v.dtype == torch.int32 else v
            for k, v in load_file(str(bundle / "inputs.safetensors")).items()}


class Models:
    """The request path's models on one runtime, fed from the exported inputs."""

    def __init__(self, bundle: Path, runtime, meta: dict):
        from ragar.encoders.efficientnet import EfficientNetLiteEncoder
        from ragar.encoders.nearid import NearIDEncoder
        from ragar.generation.pipeline import RagarPipeline
        from recsys.ranking.din import DINRanker

        self.rt = runtime
        t = _inputs(bundle)
        self.inputs = t
        os.environ["RAGAR_EFFICIENTNET_WEIGHTS"] = str(bundle / "efficientnet-lite0.safetensors")
        dev, dt = runtime.device, runtime.dtype
        self.pipe = RagarPipeline.from_pretrained(WEIGHTS / "demo-generator", torch_dtype=dt).to(dev)
        self.pipe.set_progress_bar_config(disable=True)
        self.image = EfficientNetLiteEncoder(meta["encoder_image_size"]).to(dev, dt)
        self.identity = NearIDEncoder(WEIGHTS / "demo-nearid").to(dev, dt)
        self.din = DINRanker.from_pretrained(bundle / "din").to(dev, dt)
        self.tables = (t["image_table"].to(dev, dt), t["combined_table"].to(dev, dt))
        self.user = {k: t[k].to(dev) for k in ("hist_pos", "mask", "skip_pos", "skip_mask")}
        self.user["stats"] = t["stats"].to(dev, dt)
        self.steps = meta["generation"]["num_inference_steps"]
        self.tradeoff = meta["generation"]["tradeoff"]
        self.scales = (meta["generation"]["reference_guidance_scale"], meta["generation"]["preference_guidance_scale"])
        self.rows = len(t["reference"])

    def sync(self) -> None:
        if self.rt.is_cuda:
            torch.cuda.synchronize(self.rt.device)

    def generate(self, rows: list[int], n: int = 1, seed: int = 0) -> np.ndarray:
        gens = [self.rt.generator(seed * 1009 + j) for _ in rows for j in range(n)]
        image = self.inputs["reference_images"][rows] if self.pipe.conditions_on_image else None
        out = self.pipe(reference_embeds=self.inputs["reference"][rows],
                        preference_embeds=self.inputs["preference"][rows], image=image, num_images_per_request=n,
                        num_inference_steps=self.steps, reference_guidance_scale=self.scales[0],
                        preference_guidance_scale=self.scales[1], generator=gens)
        return out.images

    def best_of(self, rows: list[int], n: int = 4, seed: int = 0) -> list[tuple[int, list[bytes]]]:
        """What a served request does after retrieval: n candidates each, scored, one chosen, PNGs."""
        from PIL import Image

        from ragar.generation.selection import select

        images = self.generate(rows, n, seed)
        b = len(rows)
        ident = torch.from_numpy(self.identity.encode(list(images))).view(b, n, -1)
        fit_emb = torch.from_numpy(self.image.encode(list(images)))
        refs = self.inputs["identity_reference"][rows]
        identity = torch.einsum("bnd,bd->bn", ident, refs)
        r = torch.as_tensor(rows)
        rep = lambda a: a[r].repeat_interleave(n, 0)  # noqa: E731 - one row per (request, candidate)
        with torch.no_grad():
            logits = self.din.forward_positions(fit_emb.to(self.rt.device, self.rt.dtype), rep(self.user["hist_pos"]),
                                                rep(self.user["mask"]), *self.tables, rep(self.user["stats"]),
                                                rep(self.user["skip_pos"]), rep(self.user["skip_mask"]))
            fit = self.din.click_probability(logits).float().cpu().view(b, n)
        chosen = select(fit.numpy(), identity.float().numpy(), self.tradeoff)[1].tolist()
        out = []
        for i in range(b):
            pngs = []
            for j in range(n):
                buf = io.BytesIO()
                Image.fromarray(images[i * n + j]).save(buf, format="PNG")
                pngs.append(buf.getvalue())
            out.append((chosen[i], pngs))
        return out


def _timed(fn, min_s: float, max_reps: int) -> float:
    """Seconds per call: one warm-up, then calls until ``min_s`` have passed (at least one)."""
    fn()
    reps, t0 = 0, time.perf_counter()
    while reps < max_reps and (reps == 0 or time.perf_counter() - t0 < min_s):
        fn()
        reps += 1
    return (time.perf_counter() - t0) / reps


def bench_generation(m: Models, batches: list[int], min_s: float) -> dict[int, float]:
    out = {}
    for b in batches:
        rows = [i % m.rows for i in range(b)]

        def run(rows=rows):
            m.generate(rows)
            m.sync()

        out[b] = b / _timed(run, min_s, 20)
    return out


def bench_request(m: Models, reps: int) -> dict[str, float]:
    times = []
    m.best_of([0])
    for i in range(reps):
        t0 = time.perf_counter()
        m.best_of([i % m.rows], seed=i)
        m.sync()
        times.append(time.perf_counter() - t0)
    return {"p50_s": statistics.median(times), "min_s": min(times)}


def _app(m: Models, batching: tuple[int, float, int]):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from serving.batching import DeadlineExceeded, MicroBatcher, Overloaded, QueueFull

    size, wait_s, queue = batching
    batcher = MicroBatcher(lambda key, rows: m.best_of(rows), max_batch_size=size, max_wait_s=wait_s, queue_size=queue)
    sizes: list[int] = []

    async def generate(request):
        body = await request.json()
        row = body.get("row")
        if not isinstance(row, int) or not 0 <= row < m.rows:
            return JSONResponse({"detail": "row must be an exported request index"}, 422)
        try:
            fut = batcher.submit("default", row, cost=4, deadline=time.perf_counter() + 60)
        except (QueueFull, Overloaded) as e:
            return JSONResponse({"detail": str(e)}, 503 if isinstance(e, Overloaded) else 429)
        try:
            (chosen, pngs), info = await fut
        except DeadlineExceeded as e:  # what the app answers: 504, the request dropped from the queue
            return JSONResponse({"detail": str(e)}, 504)
        sizes.append(info.size)
        return JSONResponse({"chosen": chosen, "png_bytes": [len(p) for p in pngs]})

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    return Starlette(routes=[Route("/generate", generate, methods=["POST"])], lifespan=lifespan), sizes


async def _load(url: str, clients: int, seconds: float, rows: int) -> dict:
    import httpx

    lat, errors, stop = [], 0, time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def worker(k: int):
            nonlocal errors
            i = k
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                r = await client.post("/generate", json={"row": i % rows})
                if r.status_code == 200:
                    lat.append(time.perf_counter() - t0)
                else:
                    errors += 1
                i += clients
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(clients)))
        wall = time.perf_counter() - t0
    lat.sort()

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

    return {"clients": clients, "requests": len(lat), "errors": errors, "requests_per_s": len(lat) / wall,
            "p50_s": pct(0.50), "p99_s": pct(0.99), "wall_s": wall}


def bench_serving(m: Models, clients: list[int], seconds: float) -> list[dict]:
    import uvicorn

    from serving.batching import CPU_BATCHING, GPU_BATCHING

    batching = GPU_BATCHING if m.rt.is_cuda else CPU_BATCHING
    app, sizes = _app(m, batching)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    th = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        out = []
        for c in clients:
            sizes.clear()
            row = asyncio.run(_load(url, c, seconds, m.rows))
            row["mean_batch_requests"] = float(np.mean(sizes)) if sizes else 0.0
            row["batching"] = {"max_batch_size": batching[0], "max_wait_s": batching[1], "queue_size": batching[2]}
            out.append(row)
        return out
    finally:
        server.should_exit = True
        th.join(timeout=30)
        sock.close()


def bench_training(bundle: Path, meta: dict, runtime, steps: int) -> float:
    from ragar.generation.configs import GeneratorConfig
    from ragar.generation.train import GeneratorPairs, train_generator

    t = _inputs(bundle)
    p = len(t["train_targets"])
    pairs = GeneratorPairs(t["train_targets"].float(), t["train_reference"].float(), t["train_preference"].float(),
                           ["u"] * p, [None] * p, ["i"] * p, ["i"] * p,
                           reference_images=t.get("train_reference_images"))
    # the autoencoder travels inside the shipped generator (the path it was trained from does not)
    vae = WEIGHTS / "demo-generator" / "vae"
    cfg = GeneratorConfig(**{**meta["generator"], "steps": steps, "sample_every": 10**9, "checkpoint_every": 10**9,
                             "init_from": None, "rank_task": False,
                             "autoencoder": str(vae) if meta["generator"].get("autoencoder") else None})
    warm = GeneratorConfig(**{**cfg.model_dump(), "steps": 3})
    with tempfile.TemporaryDirectory() as d:
        train_generator(pairs, Path(d) / "warm", warm, resume=False, progress=False, device=runtime.device)
        s = train_generator(pairs, Path(d) / "run", cfg, resume=False, progress=False, device=runtime.device)
    return steps / s["seconds_this_run"]


def run(bundle: Path, quick: bool = False, cpu: bool = True) -> dict:
    from ragar.runtime import Runtime

    meta = json.loads((bundle / "meta.json").read_text())
    gpu = Runtime.resolve("auto")
    runtimes = [gpu] + ([Runtime.resolve("cpu")] if cpu and gpu.is_cuda else [])
    res: dict = {"device": gpu.describe(), "card": gpu.card, "torch": torch.__version__,
                 "cuda": torch.version.cuda, "cpu_threads": torch.get_num_threads(), "platform": platform.platform(),
                 "inputs": {k: meta[k] for k in ("commit", "date", "world", "requests", "pairs")}, "figures": {}}
    for rt in runtimes:
        on_gpu = rt.is_cuda
        t0 = time.perf_counter()
        m = Models(bundle, rt, meta)
        f: dict = {"load_s": time.perf_counter() - t0}
        batches = ([1, 8] if quick else [1, 8, 64, 256]) if on_gpu else ([1, 8] if quick else [1, 8, 64])
        f["images_per_s"] = bench_generation(m, batches, 1.0 if quick else 3.0)
        f["best_of_4"] = bench_request(m, 2 if quick else 5)
        clients = ([4] if quick else [32, 256]) if on_gpu else ([4] if quick else [32])
        f["serving"] = bench_serving(m, clients, 5.0 if quick else 20.0)
        f["training_steps_per_s"] = bench_training(bundle, meta, rt, (4 if quick else 200) if on_gpu else (3 if quick
                                                                                                            else 10))
        res["figures"]["gpu" if on_gpu else "cpu"] = f
        del m
        if on_gpu:
            torch.cuda.empty_cache()
            f["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated(rt.device))
    return res


def table(res: dict) -> list[dict]:
    """One row per figure: the accelerator beside the CPU (blank where the CPU was not measured)."""
    figs = res["figures"]
    on_gpu = "gpu" in figs
    acc = figs["gpu"] if on_gpu else figs["cpu"]  # without an accelerator the figures are the CPU's
    cpu = figs.get("cpu") if on_gpu else None
    rows = []

    def row(what, a, c, unit):
        if not on_gpu:
            a, c = None, a
        rows.append({"figure": what, "accelerator": a, "cpu": c, "unit": unit,
                     "ratio": (a / c if unit in ("images/s", "requests/s", "steps/s") else c / a) if a and c else None})

    for b, v in acc["images_per_s"].items():
        row(f"generation, batch {b}", v, (cpu or {}).get("images_per_s", {}).get(b), "images/s")
    row("one best-of-4 request (p50)", acc["best_of_4"]["p50_s"], (cpu or {}).get("best_of_4", {}).get("p50_s"), "s")
    cs = {s["clients"]: s for s in (cpu or {}).get("serving", [])}
    for s in acc["serving"]:
        c = cs.get(s["clients"], {})
        row(f"serving, {s['clients']} clients", s["requests_per_s"], c.get("requests_per_s"), "requests/s")
        row(f"serving, {s['clients']} clients, p50", s["p50_s"], c.get("p50_s"), "s")
        row(f"serving, {s['clients']} clients, p99", s["p99_s"], c.get("p99_s"), "s")
    row("generator training (demo recipe)", acc["training_steps_per_s"], (cpu or {}).get("training_steps_per_s"),
        "steps/s")
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=Path, default=ROOT / ".device")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--quick", action="store_true", help="a few seconds per figure (checks the script, not the card)")
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU figures")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    res = run(a.inputs, a.quick, not a.no_cpu)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    except OSError:
        commit = None
    res.update(command=" ".join(["python -m benchmarks.device_check", *(argv if argv is not None else sys.argv[1:])]),
               commit=commit or None, date=datetime.now(timezone.utc).isoformat(), quick=a.quick,
               seconds=time.perf_counter() - t0, rows=table(res))
    slug = "".join(ch if ch.isalnum() else "-" for ch in res["card"].lower()).strip("-")
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / f"device-{slug}{'-quick' if a.quick else ''}.json"
    path.write_text(json.dumps(res, indent=2, default=str))
    if os.environ.get("OUT"):
        (Path(os.environ["OUT"]) / path.name).write_text(path.read_text())
    print(f"device check on {res['device']} (torch {res['torch']}, {res['seconds']:.0f} s)")
    print(f"{'figure':<40} {'accelerator':>12} {'cpu':>12} {'ratio':>8}  unit")

    def fmt(v) -> str:
        return f"{v:12.4g}" if isinstance(v, float) else f"{'':>12}"

    for r in res["rows"]:
        ratio = f"{r['ratio']:8.1f}" if r["ratio"] else f"{'':>8}"
        print(f"{r['figure']:<40} {fmt(r['accelerator'])} {fmt(r['cpu'])} {ratio}  {r['unit']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
