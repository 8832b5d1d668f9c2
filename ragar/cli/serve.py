"""``ragar serve``, ``ragar keys``, ``ragar ab report|plan|simulate`` and ``ragar eval alignment``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from ragar.cli.apps import ab_app, app, eval_app, keys_app
from ragar.cli.common import get_config, get_runtime, provenance
from ragar.cli.output import console, fail, print_table
from recsys.data.images import load_rgb

DbOpt = Annotated[str | None, typer.Option("--db", help="event store URL (sqlite:///path or postgresql+psycopg://...); "
                                           "default $RAGAR_DB_URL or sqlite:///runs/serve/events.db")]
ExperimentsOpt = Annotated[Path | None, typer.Option("--experiments", help="experiments YAML")]


def _settings(**kw):
    from pydantic import ValidationError

    from serving.settings import ServingSettings

    try:
        return ServingSettings(**{k: v for k, v in kw.items() if v is not None})
    except ValidationError as e:
        raise fail("; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())) from None


def _experiments(path: Path | None):
    from serving.experiments import ExperimentsError, load_experiments

    try:
        return load_experiments(path)
    except ExperimentsError as e:
        raise fail(str(e)) from None


def _find_experiment(exps, name: str):
    try:
        return exps.get(name)
    except KeyError as e:
        raise fail(e.args[0]) from None


@app.command("serve")
def serve_cmd(
    models: Annotated[Path | None, typer.Option(help="directory with rankers/ (and optionally generator/)")] = None,
    data: Annotated[Path | None, typer.Option("--data", "-d", help="dataset directory (catalog and log)")] = None,
    db: DbOpt = None,
    experiments: ExperimentsOpt = None,
    config: Annotated[str | None, typer.Option("--config", "-c", help="ragar config name or YAML path")] = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch_size: int | None = None,
    max_wait_ms: float | None = None,
    queue_size: int | None = None,
    num_inference_steps: int | None = None,
    images_dir: Path | None = None,
    api_keys: Annotated[Path | None, typer.Option("--api-keys", help="keys file (`ragar keys create` writes "
                                                  "it); default $RAGAR_API_KEYS_FILE")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="the try-it page gets a generated key (loopback only)")] = False,
    metrics_open: Annotated[bool, typer.Option("--metrics-open", help="/metrics without a key")] = False,
    device: Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda | cuda:N (default: "
                                               "$RAGAR_DEVICE, else the config's runtime.device)")] = None,
) -> None:
    """Serve the generation API (flags override RAGAR_* environment settings)."""
    from serving.app import key_ring
    from serving.security import KeysError
    from serving.server import serve

    settings = _settings(models=models, data=data, db_url=db, experiments=experiments, config=config,
                         max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, queue_size=queue_size,
                         num_inference_steps=num_inference_steps, images_dir=images_dir, api_keys_file=api_keys,
                         demo=demo or None, metrics_open=metrics_open or None, device=device)
    if settings.data is None:
        raise fail("no dataset: pass --data or set RAGAR_DATA")
    # a device this machine lacks is an exit 2 here, not a crash in the lifespan
    get_runtime(get_config(settings.config, None), settings.device, settings.dtype)
    _experiments(settings.experiments)  # fail fast, with the key and the file, before loading models
    try:
        ring, _ = key_ring(settings)
    except KeysError as e:
        raise fail(str(e)) from None
    if len(ring) == 0:
        raise fail("no API keys: create one with `ragar keys create NAME --file keys.yaml` and pass --api-keys "
                   "keys.yaml (or set RAGAR_API_KEYS_FILE), or run a local demo with --demo")
    if settings.demo and host not in ("127.0.0.1", "localhost", "::1"):
        raise fail(f"--demo puts a key in the page anyone at {host} could read: serve the demo on 127.0.0.1 only")
    serve(settings, host, port)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="the key's name (recorded with each request it makes)")],
    file: Annotated[Path, typer.Option("--file", "-f", help="keys file to add the key's hash to")] = Path("keys.yaml"),
    scopes: Annotated[str, typer.Option(help="comma-separated: generate, feedback, report, admin")
                      ] = "generate,feedback",
    rate_per_s: Annotated[float | None, typer.Option(help="sustained requests/s (default: the service's)")] = None,
    burst: Annotated[int | None, typer.Option(help="requests at once (default: the service's)")] = None,
) -> None:
    """Create a key: its SHA-256 goes into --file, the token is printed once and kept nowhere."""
    from serving.security import KeysError, add_key

    try:
        token = add_key(file, name, [s.strip() for s in scopes.split(",") if s.strip()], rate_per_s, burst)
    except KeysError as e:
        raise fail(str(e)) from None
    console.print(f"key {name!r} added to {file} (scopes: {scopes}); the token, shown this once:")
    print(token)


@ab_app.command("report")
def ab_report(
    experiment: Annotated[str, typer.Option(help="experiment name")],
    experiments: ExperimentsOpt = None,
    db: DbOpt = None,
    data: Annotated[Path | None, typer.Option("--data", "-d", help="the dataset whose log gives each user's "
                                              "pre-experiment click rate (CUPED); without it, no CUPED")] = None,
    control: Annotated[str | None, typer.Option(help="control arm (default: the first)")] = None,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("runs/ab"),
) -> dict:
    """User-level lifts (delta method, CUPED) with always-valid intervals and the decision, plan
    progress, guardrails, the per-exposure view and the SRM check; table, JSON and HTML."""
    from serving.analysis import experiment_report
    from serving.store import EventStore, StoreUnavailable

    settings = _settings(db_url=db)
    exp = _find_experiment(_experiments(experiments), experiment)
    covariates = _covariates(data) if data is not None else None
    try:
        store = EventStore(settings.db_url)
        rep = experiment_report(exp, store.experiment_data(exp.name, covariates), control=control)
    except StoreUnavailable as e:
        raise fail(str(e)) from None
    except (KeyError, ValueError) as e:
        raise fail(str(e).strip("'\"")) from None
    write_ab_report(rep, exp, out)
    return rep


def _covariates(data: Path) -> dict[str, float]:
    from recsys.data.io import read_table
    from serving.analysis import pre_period_click_rate

    try:
        return pre_period_click_rate(read_table(data, "interactions"))
    except (OSError, ValueError) as e:
        raise fail(f"--data {data}: cannot read its interaction log ({e})") from None


@ab_app.command("plan")
def ab_plan(
    baseline: Annotated[float, typer.Option(help="the control's click rate, e.g. 0.30")],
    mde: Annotated[float, typer.Option(help="minimum detectable effect, absolute, e.g. 0.025")],
    alpha: float = 0.05,
    power: float = 0.8,
    rho: Annotated[list[float] | None, typer.Option("--rho", help="CUPED covariate correlation(s) to plan "
                                                    "with (repeatable)")] = None,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("runs/ab-plan"),
) -> list[dict]:
    """Users per arm to detect an effect, without CUPED and with it at each correlation."""
    from eval.report import write_json
    from serving.abstats import users_per_arm

    rows = []
    for r in [0.0, *(rho or [])]:
        try:
            n = users_per_arm(baseline, mde, alpha=alpha, power=power, rho=r)
        except ValueError as e:
            raise fail(str(e)) from None
        rows.append({"baseline": baseline, "mde": mde, "alpha": alpha, "power": power, "cuped_rho": r,
                     "users_per_arm": n, "users_total": 2 * n})
    print_table(rows, "users per arm (two-sided z-test on Cohen's h; CUPED scales by 1 - rho^2)")
    write_json({"rows": rows}, out / "plan.json")
    return rows


def write_ab_report(rep: dict, exp, out: Path) -> None:
    from eval.ab_report import ab_report_html, exposure_rows, timeline_figure, user_level_rows
    from eval.report import write_json

    out.mkdir(parents=True, exist_ok=True)
    write_json(rep, out / "report.json")
    print_table(user_level_rows(rep), f"experiment {rep['experiment']}: user-level lifts vs {rep['control']} "
                f"({'CUPED, ' if rep['cuped'] else ''}always-valid intervals)")
    print_table(exposure_rows(rep), "per exposure (secondary view; exposures taken as independent)")
    srm = "SAMPLE RATIO MISMATCH" if rep["srm_detected"] else "no sample ratio mismatch"
    console.print(f"{srm}: chi2 {rep['srm_chi2']}, p {rep['srm_p_value']} over {rep['total_exposures']} exposures")
    for g in rep["guardrails"]:
        for b in g["breaches"]:
            console.print(f"[yellow]guardrail breached[/] in arm {g['arm']}: {b}")
    p = rep["plan"]
    console.print(f"plan: {p['users_per_arm_now']} of {p['users_per_arm_needed']} users per arm for mde "
                  f"{p['mde']:+g}; decision: {rep['decision']}")
    path = ab_report_html(rep, exp).write(out / "report.html")
    fig = timeline_figure(rep)
    if fig is not None:  # the lift over the looks, also as a file the docs can show
        fig.savefig(out / "timeline.png", dpi=110, bbox_inches="tight")
    console.print(f"report: {path}")


@ab_app.command("simulate")
def ab_simulate(
    experiment: Annotated[str, typer.Option(help="experiment name (must be in --experiments)")],
    experiments: ExperimentsOpt = Path("configs/experiments.yaml"),
    users: Annotated[int, typer.Option(help="simulated users")] = 200,
    days: Annotated[int, typer.Option(min=1, help="simulated days; users come back on each with --visit-p")] = 1,
    visit_p: Annotated[float, typer.Option(min=0.0, max=1.0, help="chance a user comes on a given day")] = 1.0,
    requests_per_visit: Annotated[int, typer.Option(min=1, help="at most this many requests per visit")] = 1,
    until_decision: Annotated[bool, typer.Option(help="stop after the first day on which the sequential test "
                                                 "decides every treatment arm")] = False,
    budget_minutes: Annotated[float | None, typer.Option(help="stop starting new days after this long")] = None,
    data: Annotated[Path, typer.Option("--data", "-d", help="a world directory")] = Path("runs/demo/world"),
    models: Annotated[Path | None, typer.Option(help="models directory for the server")] = Path("runs/demo"),
    config: Annotated[str, typer.Option("--config", "-c")] = "demo",
    concurrency: int = 8,
    num_inference_steps: int | None = None,
    seed: int = 0,
    reader: Annotated[Path | None, typer.Option(help="attribute reader (default: the shipped one)")] = None,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("runs/ab-sim"),
) -> dict:
    """Start the server on loopback and let the world's users request and react by their oracle
    utility, day after day, reading the experiment report after each day (the sequential test
    allows it); then write the report."""
    import time

    import polars as pl

    from ragar.generation.loading import DEMO_ATTRIBUTE_READER
    from recsys.world.attributes import AttributeReader
    from recsys.world.oracle import World
    from serving.simulate import Simulator, returning_traffic, simulated_requests

    exps = _experiments(experiments)
    exp = _find_experiment(exps, experiment)
    if not exp.active:
        raise fail(f"experiment {experiment!r} is not active in {experiments}")
    if not (data / "world.json").exists():
        raise fail(f"{data} is not a world directory: the simulation needs the world's users and oracle")
    world = World(data)
    one_each = days == 1 and visit_p >= 1 and requests_per_visit == 1
    try:
        traffic = (simulated_requests(world, users, seed).with_columns(pl.lit(0).alias("day")) if one_each else
                   returning_traffic(world, users, days, seed=seed, visit_p=visit_p,
                                     max_requests_per_visit=requests_per_visit))
    except ValueError as e:
        raise fail(str(e)) from None
    t0 = time.monotonic()
    waves, rows = [], []
    with _simulation_server(out, data, experiments, config, models, num_inference_steps) as (url, token):
        sim = Simulator(url, world, AttributeReader.from_pretrained(reader or DEMO_ATTRIBUTE_READER), api_key=token,
                        seed=seed, concurrency=concurrency)
        try:
            for day in range(days):
                rows.append(sim.run(traffic.filter(pl.col("day") == day).drop("day"), f"day {day + 1}/{days}"))
                rep = sim.report(experiment)
                decided = all(d in ("better than control", "worse than control") for d in rep["decision"].values())
                waves.append({"day": day + 1, "exposures": rep["total_exposures"], "minutes": (time.monotonic() - t0)
                              / 60, "decision": rep["decision"], "users_still_needed":
                              rep["plan"]["users_still_needed"]})
                console.print(f"day {day + 1}: {rep['total_exposures']} exposures, decision {rep['decision']}")
                if (until_decision and decided) or (budget_minutes and time.monotonic() - t0 > budget_minutes * 60):
                    break
        finally:
            sim.close()
    rows = pl.concat(rows, how="diagonal_relaxed")
    rows.write_parquet(out / "simulated.parquet")
    failed = rows.filter(rows["status"] != 200).height
    if failed:
        console.print(f"[yellow]{failed} simulated requests failed (see {out / 'server.log'})[/]")
    util = rows.group_by("arm").agg(pl.col("utility").mean().alias("mean_oracle_utility"),
                                    pl.len().alias("requests")).sort("arm")
    print_table(util.to_dicts(), "mean oracle utility of the chosen image per arm")
    rep["oracle_utility"] = util.to_dicts()
    rep["simulation"] = {"users": users, "days_run": len(waves), "days_planned": days, "visit_p": visit_p,
                         "requests_per_visit": requests_per_visit, "wall_minutes": (time.monotonic() - t0) / 60,
                         "waves": waves}
    rep["provenance"] = provenance() | {"config": {"name": config, "experiments": str(experiments)}}
    write_ab_report(rep, exp, out)
    return rep


@contextmanager
def _simulation_server(out: Path, data: Path, experiments: Path, config: str, models: Path | None,
                       num_inference_steps: int | None):
    """``ragar serve`` on a free loopback port with a fresh store and a key for this run alone
    (the simulator is a client like any other); yields (url, token)."""
    from serving.security import add_key
    from serving.server import free_port, wait_ready

    out.mkdir(parents=True, exist_ok=True)
    for f in out.glob("events.db*"):
        f.unlink()
    keys = out / "keys.yaml"
    keys.unlink(missing_ok=True)
    token = add_key(keys, "simulator", ["generate", "feedback", "report"], rate_per_s=1000, burst=1000)
    port = free_port()
    cmd = [sys.executable, "-m", "ragar.cli", "serve", "--data", str(data), "--db", f"sqlite:///{out / 'events.db'}",
           "--experiments", str(experiments), "--config", config, "--port", str(port),
           "--images-dir", str(out / "images"), "--api-keys", str(keys)]
    if models is not None:
        cmd += ["--models", str(models)]
    if num_inference_steps is not None:
        cmd += ["--num-inference-steps", str(num_inference_steps)]
    log = open(out / "server.log", "w")  # noqa: SIM115 (kept open for the server's lifetime)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_ready(url, timeout_s=600)
        except TimeoutError as e:
            raise fail(f"{e}; server log: {out / 'server.log'}") from None
        yield url, token
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@eval_app.command("alignment")
def eval_alignment(
    db: DbOpt = None,
    data: Annotated[Path | None, typer.Option("--data", "-d", help="dataset (for reference images; a world "
                                              "adds the oracle utility as a score)")] = None,
    images_dir: Annotated[Path | None, typer.Option(help="the service's images dir")] = None,
    pairs_out: Annotated[Path | None, typer.Option(help="also write the identity judgments as a CLPIPS "
                                                   "ranked-pairs CSV (read by `ragar eval clpips --pairs`)")] = None,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("runs/alignment"),
) -> list[dict]:
    """Agreement of each automatic metric with people's judgments: pairwise accuracy, Kendall's tau."""
    import polars as pl

    from eval.report import write_json
    from ragar.generation.loading import item_image_paths
    from serving.alignment import alignment_table, export_ranked_pairs, judgment_scores
    from serving.store import EventStore, StoreUnavailable

    settings = _settings(db_url=db, images_dir=images_dir)
    store = EventStore(settings.db_url)
    try:
        judged = store.judgments_frame()
        if judged.height == 0:
            raise fail("no judgments in the store yet (rate pairs on the try-it page's Rate tab)")
        extra, extra_names = {}, ()
        if data is not None and (data / "world.json").exists():
            extra = {"oracle_utility": _oracle_utilities(store, judged, data, Path(settings.images_dir))}
            extra_names = ("oracle_utility",)
        scores = judgment_scores(store, extra)
        rows = alignment_table(scores, extra_names)
        if pairs_out is not None:
            if data is None:
                raise fail("--pairs-out needs --data (the reference images)")
            refs = item_image_paths(data, pl.read_parquet(data / "items.parquet"))
            n = export_ranked_pairs(store, Path(settings.images_dir), refs, pairs_out)
            console.print(f"{n} ranked pairs written to {pairs_out}")
    except StoreUnavailable as e:
        raise fail(str(e)) from None
    print_table(rows, f"agreement with {judged.height} human judgments")
    write_json({"judgments": judged.height, "rows": rows}, out / "alignment.json")
    return rows


def _oracle_utilities(store, judgments, data: Path, images_dir: Path) -> dict[str, float]:
    """The world's oracle utility of each judged image, for the user and the reference's category."""
    import numpy as np
    import polars as pl

    from eval.generation import expected_utility, read_images
    from ragar.generation.loading import DEMO_ATTRIBUTE_READER
    from recsys.world.attributes import AttributeReader
    from recsys.world.oracle import World
    from serving.service import image_path

    world = World(data)
    ids = sorted(set(judgments["request_a"]) | set(judgments["request_b"]))
    ex = store.exposures_frame().filter(pl.col("request_id").is_in(ids))
    cat = dict(zip(world.items["item_id"], world.items["category"], strict=True))
    ex = ex.filter(pl.col("reference_item_id").is_in(list(cat)))
    if ex.height == 0:
        return {}
    imgs = np.stack([load_rgb(image_path(images_dir, r, 0)) for r in ex["request_id"]])
    read = read_images(AttributeReader.from_pretrained(DEMO_ATTRIBUTE_READER), imgs)
    util = expected_utility(world, read, ex["user_id"].to_list(), [cat[i] for i in ex["reference_item_id"]])
    return dict(zip(ex["request_id"], util.tolist(), strict=True))
