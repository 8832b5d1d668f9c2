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
