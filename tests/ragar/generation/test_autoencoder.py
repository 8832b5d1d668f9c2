"""The latent autoencoder's mechanics on tiny world renders: training lowers the loss, the latents
are scaled to unit variance, and it saves and loads like any diffusers model (no pickle)."""

import inspect
import json

import pytest
import torch

from ragar.generation.autoencoder import (
    build_autoencoder,
    decode,
    encode,
    load_autoencoder,
    train_autoencoder,
    world_renders,
)
from ragar.generation.configs import AutoencoderConfig


@pytest.fixture(scope="module")
def renders(tiny_world):
    return world_renders(tiny_world, 16)


def test_world_renders_are_every_view(renders, tiny_world):
    import polars as pl

    assert renders.dtype == torch.uint8 and renders.shape[1:] == (3, 16, 16)
    assert len(renders) == pl.read_parquet(tiny_world / "views.parquet").height


def test_training_saves_a_scaled_autoencoder(renders, tmp_path):
    cfg = AutoencoderConfig(image_size=16, channels=8, steps=40, batch_size=16, learning_rate=3e-3)
    s = train_autoencoder(renders, tmp_path, cfg, progress=False)
    assert s["final_loss"] < s["first_loss"]
    assert s["psnr_held_out"] > 5
    assert json.loads((tmp_path / "training.json").read_text())["steps"] == 40
    assert not list(tmp_path.glob("*.bin")) and list(tmp_path.glob("*.safetensors"))
    vae = load_autoencoder(tmp_path)
    assert vae.config.scaling_factor == pytest.approx(s["scaling_factor"]) and vae.config.scaling_factor != 1.0
    x = renders[:64].float() / 127.5 - 1
    with torch.no_grad():
        z = encode(vae, x)
        assert z.shape == (64, 4, 8, 8)
        assert 0.5 < float(z.std()) < 2.0  # scaled to about unit variance
        y = decode(vae, z)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1


def test_bad_training_input(renders, tmp_path):
    cfg = AutoencoderConfig(image_size=16, channels=8, steps=1)
    with pytest.raises(ValueError, match="uint8"):
        train_autoencoder(renders.float(), tmp_path, cfg, progress=False)
    with pytest.raises(ValueError, match=r"autoencoder\.image_size is 32"):
        train_autoencoder(renders, tmp_path, AutoencoderConfig(image_size=32, channels=8, steps=1), progress=False)
    with pytest.raises(ValueError, match="multiple of the downscale"):
        AutoencoderConfig(image_size=17)
    assert build_autoencoder(AutoencoderConfig(image_size=16, channels=8)).config.latent_channels == 4


def test_decoder_fine_tuning_keeps_the_latents(renders, tmp_path):
    """freeze_encoder + decoder_noise: the decoder learns to ignore latent noise while the encoder,
    its scale and so every latent a generator was trained on stay exactly as they were."""
    base = AutoencoderConfig(image_size=16, channels=8, steps=10, batch_size=16)
    train_autoencoder(renders, tmp_path / "a", base, progress=False)
    with pytest.raises(ValueError, match=r"needs autoencoder\.init_from"):
        train_autoencoder(renders, tmp_path / "x", base.model_copy(update={"freeze_encoder": True}), progress=False)
    cfg = base.model_copy(update={"init_from": str(tmp_path / "a"), "freeze_encoder": True, "decoder_noise": 0.4})
    s = train_autoencoder(renders, tmp_path / "b", cfg, progress=False)
    a, b = load_autoencoder(tmp_path / "a"), load_autoencoder(tmp_path / "b")
    assert b.config.scaling_factor == a.config.scaling_factor
    for k, v in a.encoder.state_dict().items():
        torch.testing.assert_close(b.encoder.state_dict()[k], v, rtol=0, atol=0)
    assert any(not torch.equal(b.decoder.state_dict()[k], v) for k, v in a.decoder.state_dict().items())
    assert "psnr_held_out_latent_noise_0.2" in s



def test_a_wider_decoder_learns_the_kept_encoders_latents(renders, tmp_path):
    """decoder_channels: a new, wider decoder on a frozen encoder (the latents a generator was
    trained on are unchanged); a changed encoder, or a new shape without freeze_encoder, is refused."""
    base = AutoencoderConfig(image_size=16, channels=8, steps=10, batch_size=16)
    train_autoencoder(renders, tmp_path / "a", base, progress=False)
    wide = base.model_copy(update={"init_from": str(tmp_path / "a"), "decoder_channels": 16, "decoder_blocks": [2, 1],
                                   "steps": 30, "learning_rate": 3e-3})
    with pytest.raises(ValueError, match="freeze_encoder=true"):
        train_autoencoder(renders, tmp_path / "x", wide, progress=False)
    with pytest.raises(ValueError, match="its encoder differs"):
        train_autoencoder(renders, tmp_path / "x", wide.model_copy(update={"freeze_encoder": True, "channels": 12}),
                          progress=False)
    s = train_autoencoder(renders, tmp_path / "b", wide.model_copy(update={"freeze_encoder": True}), progress=False)
    a, b = load_autoencoder(tmp_path / "a"), load_autoencoder(tmp_path / "b")
    assert b.config.decoder_block_out_channels == [16, 16] and a.config.decoder_block_out_channels == [8, 8]
    assert b.config.scaling_factor == a.config.scaling_factor
    x = renders[:32].float() / 127.5 - 1
    with torch.no_grad():
        torch.testing.assert_close(encode(b, x), encode(a, x), rtol=0, atol=0)
        assert decode(b, encode(b, x)).shape == x.shape
    assert s["final_loss"] < s["first_loss"]

def test_ssim_term_adds_to_the_loss_and_trains(renders, tmp_path):
    """Same seed, same batches: the 1 - SSIM term is on top of L1 + MSE, and the loss still falls."""
    base = AutoencoderConfig(image_size=16, channels=8, steps=30, batch_size=16, learning_rate=3e-3)
    plain = train_autoencoder(renders, tmp_path / "a", base, progress=False)
    s = train_autoencoder(renders, tmp_path / "b", base.model_copy(update={"ssim_weight": 1.0}), progress=False)
    assert s["first_loss"] > plain["first_loss"] + 0.1  # an untrained decoder's SSIM is far from 1
    assert s["final_loss"] < s["first_loss"]
    assert json.loads((tmp_path / "b" / "training.json").read_text())["config"]["ssim_weight"] == 1.0


def test_saved_config_holds_only_what_loading_reads(renders, tmp_path):
    """AutoencoderTiny records a block_out_channels its __init__ does not take; a saved
    autoencoder (alone or as a pipeline's vae/) drops it, so loading has nothing to warn about."""
    from diffusers import AutoencoderTiny

    train_autoencoder(renders, tmp_path, AutoencoderConfig(image_size=16, channels=8, steps=2), progress=False)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert "block_out_channels" not in cfg and cfg["decoder_block_out_channels"] == [8, 8]
    init_args = set(inspect.signature(AutoencoderTiny.__init__).parameters)
    assert {k for k in cfg if not k.startswith("_")} <= init_args
    assert load_autoencoder(tmp_path).config.latent_channels == 4


def test_the_shipped_vae_config_holds_only_what_loading_reads():
    from diffusers import AutoencoderTiny

    from ragar.generation.loading import DEMO_GENERATOR

    cfg = json.loads((DEMO_GENERATOR / "vae" / "config.json").read_text())
    assert {k for k in cfg if not k.startswith("_")} <= set(inspect.signature(AutoencoderTiny.__init__).parameters)
