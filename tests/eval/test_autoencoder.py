"""eval.autoencoder and `ragar eval autoencoder`: what survives the generator's autoencoder."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from eval.autoencoder import evaluate_autoencoder, reconstructions
from ragar.cli import app
from ragar.encoders.registry import build_image_encoder
from ragar.generation.autoencoder import psnr, train_autoencoder, world_renders
from ragar.generation.configs import AutoencoderConfig


@pytest.fixture(scope="module")
def trained(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("ae")
    train_autoencoder(world_renders(tiny_world, 16), out, AutoencoderConfig(image_size=16, channels=8, steps=20,
                                                                            batch_size=16), progress=False)
    return out


def test_report_matches_the_reconstructions(trained, tiny_world):
    from ragar.generation.autoencoder import load_autoencoder

    vae = load_autoencoder(trained)
    images = world_renders(tiny_world, 16)[-12:]
    rec = reconstructions(vae, images)
    assert rec.dtype == torch.uint8 and rec.shape == images.shape
    enc = build_image_encoder("nearid:demo")
    rep = evaluate_autoencoder(vae, images, enc)
    direct = psnr(rec.float() / 127.5 - 1, images.float() / 127.5 - 1).numpy()
    assert rep["psnr"]["mean"] == pytest.approx(float(direct.mean()), abs=1e-4)
    assert rep["psnr"]["ci"][0] <= rep["psnr"]["mean"] <= rep["psnr"]["ci"][1]
    assert rep["latent_shape"] == [4, 8, 8] and rep["images"] == 12
    hwc = lambda x: list(x.permute(0, 2, 3, 1).numpy())  # noqa: E731
    cos = (enc.encode(hwc(images)) * enc.encode(hwc(rec))).sum(1)
    assert rep["identity_cos"]["mean"] == pytest.approx(float(cos.mean()), abs=1e-5)
    assert rep["identity_cos"]["min"] == pytest.approx(float(cos.min()), abs=1e-5)
    # an image against itself is the ceiling the reconstructions are measured against
    assert np.allclose((enc.encode(hwc(images)) ** 2).sum(1), 1, atol=1e-4)


def test_cli_writes_the_report_and_refuses_bad_paths(trained, tiny_world, tmp_path):
    args = ["eval", "autoencoder", "--data", str(tiny_world), "--config", "tiny", "--held-out", "8",
            "--set", "autoencoder.image_size=16", "--out", str(tmp_path)]
    r = CliRunner().invoke(app, [*args, "--autoencoder", str(trained)])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "autoencoder.json").read_text())
    assert rep["images"] == 8 and rep["provenance"]["config"]["autoencoder"]["image_size"] == 16
    r = CliRunner().invoke(app, [*args, "--autoencoder", str(tmp_path)])
    assert r.exit_code == 2 and "not an autoencoder directory" in r.output
    r = CliRunner().invoke(app, [*args, "--autoencoder", str(trained), "--held-out", "0"])
    assert r.exit_code == 2
