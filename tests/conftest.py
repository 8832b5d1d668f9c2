"""Shared fixtures: a tiny world built once per session (seconds), in the real on-disk format."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from ragar.config import load_config
from recsys.world.build import build_world


@pytest.fixture(scope="session")
def tiny_config():
    return load_config("tiny")


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory, tiny_config):
    root = tmp_path_factory.mktemp("tiny_world")
    build_world(tiny_config.world, root, progress=False)
    return root


#: a generator small enough to train in seconds on the tiny world (mechanics, not quality)
TINY_GENERATOR = ["--set", "generator.image_size=16", "--set", "generator.block_out_channels=[16, 32]",
                  "--set", "generator.cross_attention_blocks=[true, false]",
                  "--set", "generator.cross_attention_dim=32",
                  "--set", "generator.adapter_tokens=2", "--set", "generator.batch_size=4",
                  "--set", "generator.num_train_timesteps=100", "--set", "generator.sample_every=1000"]


@pytest.fixture(scope="session")
def tiny_models(tiny_world, tmp_path_factory):
    """The tiny world with a trained tiny generator and rankers, built through the CLI."""
    from typer.testing import CliRunner

    from ragar.cli import app

    root = tmp_path_factory.mktemp("tiny_models")
    runner = CliRunner()
    r = runner.invoke(app, ["train", "ranker", "--data", str(tiny_world), "--out", str(root / "rankers"),
                            "--config", "tiny"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", "generator", "--data", str(tiny_world), "--out", str(root / "generator"),
                            "--config", "tiny", "--steps", "3", *TINY_GENERATOR])
    assert r.exit_code == 0, r.output
    return {"data": tiny_world, "generator": root / "generator", "rankers": root / "rankers"}


@pytest.fixture(scope="session")
def tiny_personalizer(tiny_models, tiny_config):
    from ragar.generation.loading import load_personalizer

    enc = tiny_config.encoder
    return load_personalizer(tiny_models["data"], tiny_models["generator"], tiny_models["rankers"],
                             image_encoder=enc.image, image_size=enc.image_size, text_encoder=enc.text,
                             text_weight=enc.text_weight)
