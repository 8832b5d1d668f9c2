"""What every command shares: the config and device options, and the loaders that turn a bad input into exit 2."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ragar.cli.output import err, fail
from ragar.config import ConfigError, RagarConfig, load_config

ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="named config (configs/<name>.yaml) "
                                               "or a YAML path, layered over configs/defaults.yaml")]


SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override, e.g. --set world.seed=3")]


DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda | cuda:N (default: the "
                                               "config's runtime.device; the dtype is runtime.dtype)")]


def get_config(name: str | None, sets: list[str] | None, device: str | None = None) -> RagarConfig:
    """The layered config; ``--device`` is the last layer (``runtime.device``), checked at once, so
    a command asked for a device this machine lacks exits 2 before it loads anything."""
    try:
        cfg = load_config(name, [*(sets or []), *([f"runtime.device={device}"] if device else [])])
    except ConfigError as e:
        raise fail(str(e).replace(f"--set runtime.device={device}", f"--device {device}")) from None
    if device is not None:
        get_runtime(cfg)
    return cfg


_announced: set[str] = set()


def device_runtime(device: str | None):
    """The runtime of a command that takes no config: ``--device`` or ``auto``."""
    from ragar.runtime import RuntimeConfig

    try:
        rc = RuntimeConfig(device=device or "auto")
    except ValueError:
        raise fail(f"--device {device!r}: use auto, cpu, cuda or cuda:N") from None
    return get_runtime(RagarConfig(runtime=rc))


def get_runtime(cfg: RagarConfig, device: str | None = None, dtype: str | None = None):
    """The device and dtype the command's models run on (:mod:`ragar.runtime`): the config's, or
    ``device`` / ``dtype`` over it (the service's RAGAR_DEVICE / RAGAR_DTYPE)."""
    from ragar.runtime import DeviceUnavailableError, Runtime

    try:
        rt = Runtime.from_config(cfg.runtime, device, dtype)
    except (DeviceUnavailableError, ValueError) as e:
        raise fail(str(e)) from None
    if (d := rt.describe()) not in _announced:  # once per process, on stderr (stdout holds the tables)
        _announced.add(d)
        err.print(f"runtime: {d}" + (" (runtime.device=auto)" if (device or cfg.runtime.device) == "auto" else ""),
                  highlight=False)
    return rt


GeneratorOpt = Annotated[Path | None, typer.Option(help="a trained generator (default: the shipped demo generator)")]


RankersOpt = Annotated[Path | None, typer.Option("--rankers", "-r", help="trained rankers (preference-fit scores)")]


def _personalizer(cfg: RagarConfig, data: Path, generator: Path | None, rankers: Path | None):
    from ragar.generation.loading import personalizer_from_config

    try:
        return personalizer_from_config(cfg, data, generator, rankers, runtime=get_runtime(cfg))
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise fail(str(e).strip("'\"")) from None


def _encoders(cfg: RagarConfig):
    from ragar.encoders.registry import build_image_encoder, build_text_encoder

    try:
        rt = get_runtime(cfg)
        return (build_image_encoder(cfg.encoder.image, cfg.encoder.image_size, rt),
                build_text_encoder(cfg.encoder.text, rt))
    except (ValueError, FileNotFoundError, OSError) as e:
        raise fail(f"cannot load encoders: {e}") from None


def _embed(cfg: RagarConfig, data: Path, progress: bool = True):
    from ragar.encoders.catalog import embed_catalog

    if not (data / "items.parquet").exists():
        raise fail(f"{data} has no items.parquet: not a dataset directory")
    img, txt = _encoders(cfg)
    return embed_catalog(data, img, txt, batch_size=cfg.encoder.batch_size, progress=progress)


def _item_table(cfg: RagarConfig, data: Path):
    import polars as pl

    from ragar.generation.loading import item_table

    return item_table(pl.read_parquet(data / "items.parquet"), _embed(cfg, data), cfg.encoder.text_weight)


def _ranking_data(cfg: RagarConfig, data: Path):
    from recsys.data.io import scan_interactions
    from recsys.ranking.pipeline import prepare

    items = _item_table(cfg, data)
    r = cfg.ranker
    rd = prepare(scan_interactions(data), items, cfg.preference, cut=r.cut, valid_share=r.valid_share,
                 hr_queries=r.hr_queries, hr_negatives=r.hr_negatives, seed=r.seed, max_train=r.max_train,
                 progress=True)
    return items, rd


def _world_and_reader(data: Path, reader: Path | None, runtime=None):
    from ragar.generation.loading import DEMO_ATTRIBUTE_READER
    from recsys.world.attributes import AttributeReader
    from recsys.world.oracle import World

    if not (data / "world.json").exists():
        return None, None
    try:
        attr = AttributeReader.from_pretrained(reader or DEMO_ATTRIBUTE_READER)
        return World(data), attr if runtime is None else attr.to(runtime.device, runtime.dtype)
    except (FileNotFoundError, ValueError) as e:
        raise fail(str(e)) from None


def _personalize_settings(cfg: RagarConfig, steps: int | None, seed: int | None):
    pe = cfg.personalize_encoder
    lora = pe.lora.model_copy(update={k: v for k, v in (("steps", steps), ("seed", seed)) if v is not None})
    data = pe.data.model_copy(update={"seed": seed} if seed is not None else {})
    return lora, data


def provenance(cfg: RagarConfig | None = None) -> dict:
    """How a results JSON was made: the command line, the commit (and whether the tree had
    uncommitted changes), the resolved config and the date. ``make results`` reruns the command."""
    from ragar.provenance import run_record

    return run_record("ragar") | {"config": cfg.model_dump(mode="json") if cfg is not None else None}
