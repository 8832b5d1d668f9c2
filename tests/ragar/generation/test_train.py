"""Training mechanics on the tiny world with a tiny UNet: the loss falls, checkpoints round-trip,
a resumed run equals an uninterrupted one, and the saved weights drive the pipeline."""

import itertools
import json

import numpy as np
import polars as pl
import pytest
import torch

from ragar.generation.configs import GeneratorConfig
from ragar.generation.train import make_pairs, train_generator

TINY = dict(image_size=16, block_out_channels=[16, 32], cross_attention_blocks=[True, False], cross_attention_dim=32,
            adapter_tokens=2,
            num_train_timesteps=100, batch_size=8, learning_rate=1e-3, checkpoint_every=3, sample_every=1000)


@pytest.fixture(scope="module")
def pairs(tiny_world):
    items = pl.read_parquet(tiny_world / "items.parquet")
    rng = np.random.default_rng(0)
    vec = rng.normal(size=(items.height, 24)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    return make_pairs(tiny_world, items["item_id"].to_numpy(), vec, image_size=16)


def test_pairs_follow_the_task(pairs, tiny_world):
    items = pl.read_parquet(tiny_world / "items.parquet")
    ident = dict(zip(items["item_id"], items["identity_id"], strict=True))
    assert len(pairs.targets) > 10 and pairs.targets.shape[1:] == (3, 16, 16)
    assert pairs.targets.min() >= -1 and pairs.targets.max() <= 1
    for t, r in zip(pairs.target_items, pairs.reference_items, strict=True):
        assert t != r and ident[t] == ident[r]  # the reference is the same identity in another style
    assert pairs.reference.shape == pairs.preference.shape


def test_loss_falls(pairs, tmp_path):
    s = train_generator(pairs, tmp_path, GeneratorConfig(**{**TINY, "steps": 40, "checkpoint_every": 100}),
                        progress=False)
    assert s["final_loss"] < s["first_loss"]


def test_resume_equals_uninterrupted(pairs, tmp_path):
    cfg6 = GeneratorConfig(**{**TINY, "steps": 6})
    train_generator(pairs, tmp_path / "a", cfg6, progress=False)
    train_generator(pairs, tmp_path / "b", GeneratorConfig(**{**TINY, "steps": 3}), progress=False)  # "crash" at 3
    s = train_generator(pairs, tmp_path / "b", cfg6, progress=False)  # resumes from checkpoint-3
    assert s["resumed_from"] == 3
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "a" / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert json.loads((tmp_path / "b" / "checkpoint-6" / "state.json").read_text())["step"] == 6


def test_saved_weights_drive_the_pipeline(pairs, tmp_path):
    from diffusers import DDIMScheduler, UNet2DConditionModel

    from ragar.generation.adapter import PreferenceAdapter
    from ragar.generation.pipeline import RagarPipeline

    train_generator(pairs, tmp_path, GeneratorConfig(**{**TINY, "steps": 2}), progress=False)
    pipe = RagarPipeline(unet=UNet2DConditionModel.from_pretrained(tmp_path / "unet"),
                         scheduler=DDIMScheduler.from_pretrained(tmp_path / "scheduler"),
                         adapter=PreferenceAdapter.from_pretrained(tmp_path / "adapter"))
    pipe.set_progress_bar_config(disable=True)
    assert pipe.conditions_on_image and pipe.unet.config.in_channels == 6
    out = pipe(reference_embeds=pairs.reference[:2], preference_embeds=pairs.preference[:2],
               image=pairs.reference_images[:2], num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (2, 16, 16, 3)


def test_pairs_are_aligned_renders(pairs, tiny_world):
    """Target and reference show the same identity in the same view: only the style differs, so
    the background (the image border) is the same in both, and every pair has its own camera."""
    border = torch.ones(16, 16, dtype=torch.bool)
    border[2:-2, 2:-2] = False
    t, r = pairs.targets[:, :, border], pairs.reference_images[:, :, border]
    same = (t - r).abs().amax(dim=(1, 2)) < 0.05
    assert same.float().mean() > 0.9  # (an object may touch the border in a few views)
    assert len({x.numpy().tobytes() for x in pairs.targets}) > 0.9 * len(pairs.targets)


def test_style_pairs_render_styles_the_identity_lacks(tiny_world):
    items = pl.read_parquet(tiny_world / "items.parquet")
    rng = np.random.default_rng(0)
    vec = rng.normal(size=(items.height, 24)).astype(np.float32)
    p = make_pairs(tiny_world, items["item_id"].to_numpy(), vec, image_size=16, style_pairs=1.0)
    assert p.style_pair.float().mean() > 0.8  # (a style only the target's own identity has keeps its history)
    own = {i: (a, b, c) for i, a, b, c in items.select("item_id", "palette", "pattern", "finish").iter_rows()}
    plain = make_pairs(tiny_world, items["item_id"].to_numpy(), vec, image_size=16)
    # same event order and cameras are drawn after the styles: some targets now differ from the clicked item's render
    assert p.target_items == plain.target_items and len(own) == items.height
    assert (p.targets - plain.targets).abs().amax(dim=(1, 2, 3)).gt(0.1).float().mean() > 0.3


def test_latent_generator_trains_and_loads(pairs, tiny_world, tmp_path):
    from ragar.generation.autoencoder import train_autoencoder, world_renders
    from ragar.generation.configs import AutoencoderConfig
    from ragar.generation.pipeline import RagarPipeline

    train_autoencoder(world_renders(tiny_world, 16), tmp_path / "ae", AutoencoderConfig(image_size=16, channels=8,
                                                                                         steps=3), progress=False)
    s = train_generator(pairs, tmp_path / "g", GeneratorConfig(**{**TINY, "steps": 30, "checkpoint_every": 100,
                                                                    "autoencoder": str(tmp_path / "ae")}),
                        progress=False)
    assert s["final_loss"] < s["first_loss"]
    pipe = RagarPipeline.from_pretrained(tmp_path / "g")
    assert pipe.vae is not None and pipe.unet.config.sample_size == 8 and pipe.unet.config.in_channels == 8
    assert pipe.image_size == 16
    assert "block_out_channels" not in json.loads((tmp_path / "g" / "vae" / "config.json").read_text())
    assert pipe.scheduler.config.clip_sample is False  # latents are not in [-1, 1]: no x̂0 clipping
    # the sampler reads the UNet's output as it was trained: v (the default), not epsilon
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    pipe.set_progress_bar_config(disable=True)
    out = pipe(reference_embeds=pairs.reference[:1], preference_embeds=pairs.preference[:1],
               image=pairs.reference_images[:1], num_inference_steps=2)
    assert out.images.shape == (1, 16, 16, 3)


def test_cli_train_generator_with_samples(tiny_world, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ragar.cli import app

    args = ["train", "generator", "--data", str(tiny_world), "--out", str(tmp_path), "--config", "tiny",
            "--steps", "4", "--set", "generator.image_size=16", "--set", "generator.block_out_channels=[16, 32]",
            "--set", "generator.cross_attention_blocks=[true, false]",
            "--set", "generator.cross_attention_dim=32", "--set", "generator.sample_every=2",
            "--set", "generator.checkpoint_every=2", "--set", "generator.batch_size=4"]
    monkeypatch.setattr("sys.argv", ["ragar", *args])  # what the process's command line would be
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "samples-2.png").exists() and (tmp_path / "checkpoint-4" / "state.json").exists()
    prov = json.loads((tmp_path / "training.json").read_text())
    assert prov["steps"] == 4 and prov["world_seed"] == 0 and prov["command"] == " ".join(["ragar", *args])
    assert prov["date"] and "commit" in prov  # where the weights came from, as every run record says
    assert prov["params"]["steps"] == 4 and "generator.image_size=16" in prov["params"]["set_"]
    r = CliRunner().invoke(app, ["train", "generator", "--data", str(tmp_path), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "not a world" in r.output
    # style pairs over a catalog column that does not exist: a clear error, nothing trained
    r = CliRunner().invoke(app, [*args[:5], str(tmp_path / "y"), *args[6:], "--set", "generator.style_pairs=0.5",
                                 "--set", "generator.style_columns=[palette, colour]"])
    assert r.exit_code == 2 and "colour" in r.output and not (tmp_path / "y").exists()
    # with style pairs the run reports how many pairs took same-style items
    r = CliRunner().invoke(app, [*args[:5], str(tmp_path / "z"), *args[6:], "--set", "generator.style_pairs=0.5"])
    assert r.exit_code == 0, r.output
    assert 0 < json.loads((tmp_path / "z" / "training.json").read_text())["style_pairs"] < prov["pairs"]


def test_rank_task_fine_tunes_and_is_an_ablation_switch(tiny_models, tmp_path):
    """--init BASE --rank-task and --init BASE: same start, same steps; only the first logs the
    ranking loss, and the two end with different weights."""
    from typer.testing import CliRunner

    from ragar.cli import app
    from tests.conftest import TINY_GENERATOR

    common = ["train", "generator", "--data", str(tiny_models["data"]), "--config", "tiny", "--steps", "2",
              "--init", str(tiny_models["generator"]), *TINY_GENERATOR, "--set", "generator.rank_batch=2"]
    r = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "rank"), "--rank-task",
                                 "--rankers", str(tiny_models["rankers"])])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "plain")])
    assert r.exit_code == 0, r.output
    rank = json.loads((tmp_path / "rank" / "training.json").read_text())
    plain = json.loads((tmp_path / "plain" / "training.json").read_text())
    assert rank["rank_loss_final"] > 0 and 0 <= rank["rank_win_rate_final"] <= 1
    assert plain["rank_loss_final"] is None
    assert rank["config"]["init_from"] == plain["config"]["init_from"] == str(tiny_models["generator"])
    from safetensors.torch import load_file
    a = load_file(str(tmp_path / "rank" / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(tmp_path / "plain" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert any(not torch.equal(a[k], b[k]) for k in a)
    # the consistency term is the MSE to what the starting weights predict: zero (and without
    # gradient) at the first step, positive once the weights have moved, so the logged loss grows
    r = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "cons"), "--rank-task",
                                 "--rankers", str(tiny_models["rankers"]), "--set", "generator.rank_consistency=100"])
    assert r.exit_code == 0, r.output
    cons = json.loads((tmp_path / "cons" / "training.json").read_text())
    assert cons["rank_loss_final"] > rank["rank_loss_final"]
    # errors: the rank task without rankers, a bad init directory
    r = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "x"), "--rank-task"])
    assert r.exit_code == 2 and "--rankers" in r.output
    bad_init = [*common[:-len(TINY_GENERATOR) - 4], "--init", str(tmp_path), "--out", str(tmp_path / "y")]
    r = CliRunner().invoke(app, bad_init)
    assert r.exit_code == 2 and "not a trained generator" in r.output


def test_style_pairs_take_same_style_items_of_other_identities(tiny_world):
    """On a world a style pair's style is drawn from the whole catalog (the target is rendered in
    it): its preference is a mean of one to three unit vectors of items sharing one style, none of
    them the target's identity; history pairs keep their preference."""
    items = pl.read_parquet(tiny_world / "items.parquet")
    rng = np.random.default_rng(0)
    vec = rng.normal(size=(items.height, 24)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    ids = items["item_id"].to_numpy()
    plain = make_pairs(tiny_world, ids, vec, image_size=16)
    mixed = make_pairs(tiny_world, ids, vec, image_size=16, style_pairs=0.5)
    assert plain.style_pair is None and mixed.target_items == plain.target_items
    chosen = mixed.style_pair.numpy()
    assert 0.3 < chosen.mean() < 0.7  # about the share asked for
    torch.testing.assert_close(mixed.preference[~chosen], plain.preference[~chosen])
    style = dict(zip(ids, zip(items["palette"], items["pattern"], items["finish"], strict=True), strict=True))
    ident = dict(zip(ids, items["identity_id"], strict=True))
    for j in np.flatnonzero(chosen)[:10]:
        t = mixed.target_items[j]
        p = mixed.preference[j].numpy()
        best = np.inf
        for look in set(style.values()):
            pool = [i for i, x in enumerate(ids) if style[x] == look and ident[x] != ident[t]]
            means = [vec[list(c)].mean(0) for k in (1, 2, 3) for c in itertools.combinations(pool, k)]
            best = min([best, *(np.abs(m - p).max() for m in means)])
        assert best < 1e-6


def test_style_pairs_name_a_missing_column(tiny_world):
    items = pl.read_parquet(tiny_world / "items.parquet")
    vec = np.ones((items.height, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="colour"):
        make_pairs(tiny_world, items["item_id"].to_numpy(), vec, image_size=16, style_pairs=0.5,
                   style_columns=["palette", "colour"])


def test_init_from_a_checkpoint_takes_its_ema_weights(pairs, tmp_path):
    """A checkpoint-N directory as init_from starts from the EMA weights a finished run releases."""
    from ragar.generation.pipeline import RagarPipeline
    from ragar.generation.train import _initial_models

    train_generator(pairs, tmp_path / "g", GeneratorConfig(**{**TINY, "steps": 6, "ema_decay": 0.9}),
                    progress=False)
    released = RagarPipeline.from_pretrained(tmp_path / "g")
    unet, adapter, _ = _initial_models(pairs, GeneratorConfig(**{**TINY, "init_from": str(tmp_path / "g" /
                                                                                       "checkpoint-6")}))
    for a, b in zip(unet.state_dict().values(), released.unet.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(adapter.state_dict().values(), released.adapter.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_sample_grid_shows_the_ema_weights_and_leaves_training_alone(pairs, tmp_path):
    """A grid drawn during training is what a release at that step would give (its EMA weights),
    and drawing it changes nothing in the run."""
    from PIL import Image

    from ragar.generation.pipeline import RagarPipeline
    from ragar.generation.train import sample_grid

    cfg = {**TINY, "steps": 6, "ema_decay": 0.9, "learning_rate": 1e-2}
    train_generator(pairs, tmp_path / "g", GeneratorConfig(**{**cfg, "sample_every": 3}), progress=False)
    train_generator(pairs, tmp_path / "plain", GeneratorConfig(**cfg), progress=False)
    released = RagarPipeline.from_pretrained(tmp_path / "g")
    want = np.asarray(sample_grid(released.unet, released.adapter, pairs, GeneratorConfig(**cfg))).astype(int)
    grid = np.asarray(Image.open(tmp_path / "g" / "samples-6.png")).astype(int)
    assert np.abs(grid - want).max() <= 1
    plain = RagarPipeline.from_pretrained(tmp_path / "plain")
    for a, b in zip(released.unet.state_dict().values(), plain.unet.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
