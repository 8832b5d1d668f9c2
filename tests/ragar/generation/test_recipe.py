"""The GPU recipe's mechanics on the CPU with tiny models: from exported pairs to a saved float16
pipeline that renders a reference, with fixed steps or steps taken from a time budget."""

import json

import numpy as np
import polars as pl
import pytest
import torch

from ragar.generation.pairs import make_pairs
from ragar.generation.portable import save_pairs
from ragar.generation.recipe import STAGES, _Budget, main, run

AE = dict(image_size=16, channels=8, encoder_blocks=[0, 1], decoder_blocks=[1, 0], batch_size=4, steps=5)
GEN = dict(image_size=16, block_out_channels=[16, 32], cross_attention_blocks=[True, False], cross_attention_dim=32,
           adapter_tokens=2, num_train_timesteps=100, batch_size=4, steps=5)


@pytest.fixture(scope="module")
def exported(tiny_world, tmp_path_factory):
    items = pl.read_parquet(tiny_world / "items.parquet")
    vec = np.random.default_rng(0).normal(size=(items.height, items.height + 8)).astype(np.float32)
    ids = items["item_id"].to_numpy()
    out = tmp_path_factory.mktemp("pairs")
    save_pairs(make_pairs(tiny_world, ids, vec, 16, max_pairs=40, render_images=False), ids, vec, out,
               meta={"autoencoder": AE, "generator": GEN})
    return out


def test_fixed_steps_make_a_pipeline_that_renders(exported, tmp_path):
    from ragar.generation.pipeline import RagarPipeline

    main(["--pairs", str(exported), "--out", str(tmp_path), "--device", "cpu", "--workers", "1", "--steps", "3,2,4"])
    log = json.loads((tmp_path / "recipe.json").read_text())
    assert [s["stage"] for s in log["stages"]] == list(STAGES)
    assert [s["steps"] for s in log["stages"]] == [3, 2, 4]
    assert log["pairs"] == 40 and log["image_size"] == 16
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert {v.dtype for v in saved.values()} == {torch.float16}  # released in float16
    pipe = RagarPipeline.from_pretrained(tmp_path / "pipeline")
    assert pipe.vae is not None  # with the decoder it was trained on
    pipe.set_progress_bar_config(disable=True)
    d = pipe.adapter.config.embed_dim
    ref = np.full((20, 20, 3), 200, np.uint8)  # any size: resized inside
    out = pipe(torch.ones(1, d), torch.ones(1, d), image=ref, num_inference_steps=2,
               generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 16, 16, 3)


def test_budget_sets_the_steps(exported, tmp_path):
    log = run(exported, tmp_path, budget_s=20.0, device="cpu", workers=1, probe_steps=1, min_steps=1)
    for s in log["stages"]:
        assert s["probe_steps_per_s"] > 0 and s["steps"] >= 1
    assert (tmp_path / "pipeline" / "unet").is_dir()


def test_wrong_step_count_is_refused():
    with pytest.raises(ValueError, match="needs 3 counts"):
        _Budget(10.0, 1, 1, [1, 2])


def test_the_recipe_runs_without_the_packages_that_cannot_travel(exported, tmp_path):
    """What a GPU machine runs: rendering and all three stages with polars, faiss, LightGBM and the
    weight packages unimportable (the blocker of tests/test_device_check.py)."""
    import subprocess
    import sys

    from tests.test_device_check import BLOCK, ROOT

    code = BLOCK + ("from ragar.generation.recipe import main\n"
                    f"main(['--pairs', {str(exported)!r}, '--out', {str(tmp_path)!r}, '--device', 'cpu', "
                    "'--workers', '2', '--steps', '2,1,2'])\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    prov = json.loads((tmp_path / "recipe.json").read_text())["provenance"]
    assert prov["command"].startswith("python -m ragar.generation.recipe") and prov["date"]


def test_a_recipes_stages_release_with_their_own_records(exported, tmp_path, monkeypatch):
    """scripts/release_generator.py: the pipeline from the stages' directories (stage 3's UNet,
    stage 2's decoder) in float16, and a provenance.json whose numbers are the ones each stage's
    training.json recorded, in the order the stages ran."""

    from safetensors.torch import load_file

    from ragar.generation.pipeline import RagarPipeline
    from tests.test_device_check import ROOT

    monkeypatch.syspath_prepend(str(ROOT / "scripts"))  # undone after the test
    import release_generator

    run(exported, tmp_path / "run", budget_s=0, device="cpu", workers=1, fixed_steps=[3, 2, 4])
    # the CPU recipe trains the UNet in two runs; the GPU recipe's one run stands in for both
    (tmp_path / "run" / "generator-a").mkdir()
    (tmp_path / "run" / "generator-a" / "training.json").write_text(json.dumps({"steps": 1, "command": "first"}))
    dest = tmp_path / "release"
    dest.mkdir()
    (dest / "samples-999.png").write_bytes(b"an older release's grid")
    release_generator.main(["--out", str(tmp_path / "run"), "--dest", str(dest), "--note", "tiny"])
    prov = json.loads((dest / "provenance.json").read_text())
    for key, folder, _ in release_generator.STAGES:
        assert prov[key] == json.loads((tmp_path / "run" / folder / "training.json").read_text())
    assert [prov[k]["steps"] for k, _, _ in release_generator.STAGES] == [3, 2, 1, 4]
    assert prov["trained_by"][prov["trained_by"].index("# stage 3: " + release_generator.STAGES[2][2]) + 1] == "first"
    assert prov["note"] == "tiny" and [c for c in prov["trained_by"] if c.startswith("# stage")] == [
        f"# stage {i}: {what}" for i, (_, _, what) in enumerate(release_generator.STAGES, 1)]
    assert prov["stages"][0]["what"] == "the autoencoder, 16 px to 8x8x4 latents, from scratch"
    assert not (dest / "samples-999.png").exists() and (dest / "samples-4.png").exists()
    unet = load_file(str(dest / "unet" / "diffusion_pytorch_model.safetensors"))
    assert {v.dtype for v in unet.values()} == {torch.float16}
    pipe = RagarPipeline.from_pretrained(dest)
    robust = load_file(str(tmp_path / "run" / "autoencoder-robust" / "diffusion_pytorch_model.safetensors"))
    shipped = pipe.vae.state_dict()
    assert all(torch.equal(shipped[k].float(), v.half().float()) for k, v in robust.items())


def test_a_release_names_the_stage_that_has_not_finished(tmp_path):
    import subprocess
    import sys

    from tests.test_device_check import ROOT

    (tmp_path / "autoencoder").mkdir()
    (tmp_path / "autoencoder" / "training.json").write_text("{}")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "release_generator.py"), "--out", str(tmp_path),
                        "--dest", str(tmp_path / "release")], capture_output=True, text=True)
    assert r.returncode != 0 and "autoencoder-robust/training.json is missing" in r.stderr
    assert not (tmp_path / "release").exists()


def test_a_stage_command_is_rebuilt_with_its_options(monkeypatch):
    """`ragar train` records its program name and each option's value as text; the release's
    ``trained_by`` must give the whole command, or nobody can rerun a stage from it."""

    from tests.test_device_check import ROOT

    monkeypatch.syspath_prepend(str(ROOT / "scripts"))  # undone after the test
    from release_generator import command_line

    params = {"data": "runs/demo/world", "out": "runs/x", "steps": "1200", "max_pairs": "None", "rank_task": "False",
              "no_resume": "True", "set_": "['a.b=1', 'a.c=two words']", "device": "None"}
    want = ("ragar train generator --data runs/demo/world --out runs/x --steps 1200 --no-resume "
            "--set a.b=1 --set 'a.c=two words'")
    assert command_line({"command": "ragar train generator", "params": params}) == want
    assert command_line({"command": "ragar train generator", "params": str(params)}) == want  # older records
    assert command_line({"command": "first"}) == "first"
    whole = {"command": "ragar train generator --data w --out o", "params": params, "date": "2026-11-29"}
    assert command_line(whole) == whole["command"]  # a record that holds the whole command is read as it is
