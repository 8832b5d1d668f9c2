"""Mechanics of the pipeline with a tiny randomly initialised UNet (quality is not tested here)."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler, UNet2DConditionModel

from ragar.generation.adapter import AdapterConfig, PreferenceAdapter
from ragar.generation.pipeline import RagarPipeline, RagarPipelineOutput

D, C = 16, 32


def _pipe(scheduler=None):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
                                block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=C,
                                attention_head_dim=8, norm_num_groups=8)
    adapter = PreferenceAdapter.from_sizes(AdapterConfig(embed_dim=D, cross_attention_dim=C, tokens=2))
    pipe = RagarPipeline(unet=unet, scheduler=scheduler or DDIMScheduler(num_train_timesteps=100), adapter=adapter)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _emb(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, D, generator=g), torch.randn(b, D, generator=g)


def test_call_shapes_types_and_seed():
    pipe = _pipe()
    r, p = _emb()
    out = pipe(reference_embeds=r, preference_embeds=p, num_images_per_request=3, num_inference_steps=3,
               generator=torch.Generator().manual_seed(1))
    assert isinstance(out, RagarPipelineOutput)
    assert out.images.shape == (6, 16, 16, 3) and out.images.dtype == np.uint8
    assert out.timings["images"] == 6 and out.timings["seconds"] > 0
    again = pipe(reference_embeds=r, preference_embeds=p, num_images_per_request=3, num_inference_steps=3,
                 generator=torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(out.images, again.images)  # deterministic by generator
    pt, _ = pipe(reference_embeds=r, preference_embeds=p, num_inference_steps=2, output_type="pt",
                 return_dict=False, generator=torch.Generator().manual_seed(1))
    assert pt.shape == (2, 3, 16, 16) and pt.min() >= -1 and pt.max() <= 1


@pytest.mark.parametrize("sched", [DDPMScheduler, EulerDiscreteScheduler])
def test_any_scheduler_can_be_swapped_in(sched):
    pipe = _pipe(sched(num_train_timesteps=100))
    r, p = _emb(1)
    out = pipe(reference_embeds=r, preference_embeds=p, num_inference_steps=3,
               generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 16, 16, 3)


def test_guidance_scales_change_the_output():
    pipe = _pipe()
    r, p = _emb(1)
    with torch.no_grad():  # make the preference tokens matter for a random UNet
        pipe.adapter.preference_proj.weight.mul_(10)
    run = lambda s: pipe(reference_embeds=r, preference_embeds=p, preference_guidance_scale=s,  # noqa: E731
                         num_inference_steps=3, output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert not torch.allclose(run(0.0), run(5.0))


def test_adapter_dropout_and_roundtrip(tmp_path):
    a = PreferenceAdapter.from_sizes(AdapterConfig(embed_dim=D, cross_attention_dim=C, tokens=2))
    r, p = _emb(3)
    drop = torch.tensor([True, False, True])
    out = a(r, p, drop_reference=drop, drop_preference=~drop)
    assert out.shape == (3, 4, C)
    torch.testing.assert_close(out[0, :2], a.null_reference + a.kind[0])  # a dropped condition is its null tokens
    torch.testing.assert_close(out[1, 2:], a.null_preference + a.kind[1])
    a.save_pretrained(tmp_path / "ad")
    b = PreferenceAdapter.from_pretrained(tmp_path / "ad")
    torch.testing.assert_close(b(r, p), a(r, p))


def test_bad_inputs():
    pipe = _pipe()
    r, p = _emb(2)
    with pytest.raises(ValueError, match="differ"):
        pipe(reference_embeds=r, preference_embeds=p[:1])
    with pytest.raises(ValueError, match="num_images_per_request"):
        pipe(reference_embeds=r, preference_embeds=p, num_images_per_request=0)
    with pytest.raises(ValueError, match="NaN"):
        pipe(reference_embeds=r, preference_embeds=torch.full_like(p, float("nan")), num_inference_steps=1)
    with pytest.raises(ValueError, match=r"must be \(B, 16\)"):
        pipe(reference_embeds=torch.ones(2, 3), preference_embeds=torch.ones(2, 3), num_inference_steps=1)


def test_half_precision_save_loads_back_as_fp32(tmp_path):
    from ragar.generation.configs import GeneratorConfig
    from ragar.generation.train import build_unet

    cfg = GeneratorConfig(image_size=16, block_out_channels=[16, 32], cross_attention_blocks=[True, False],
                          cross_attention_dim=32, adapter_tokens=2)
    torch.manual_seed(0)
    pipe = RagarPipeline(build_unet(cfg), DDIMScheduler(), PreferenceAdapter.from_sizes(AdapterConfig(8, 32, 2)))
    pipe.save_pretrained(tmp_path, half=True)
    back = RagarPipeline.from_pretrained(tmp_path, scheduler="euler")
    assert back.unet.dtype == torch.float32 and back.adapter.dtype == torch.float32
    assert type(back.scheduler).__name__ == "EulerDiscreteScheduler"
    w, w2 = pipe.adapter.reference_proj.weight, back.adapter.reference_proj.weight
    assert torch.allclose(w, w2, atol=1e-3) and not torch.equal(w, w2)  # fp16-rounded, not identical
    with pytest.raises(ValueError, match="unknown scheduler"):
        RagarPipeline.from_pretrained(tmp_path, scheduler="magic")
    with pytest.raises(FileNotFoundError, match="not a RAGAR generator"):
        RagarPipeline.from_pretrained(tmp_path / "unet")


def test_saved_through_diffusers_machinery_and_legacy_dirs_still_load(tmp_path):
    """save_pretrained writes diffusers' model_index.json; a directory written before it existed
    (adapter as config.json with "type" + model.safetensors, no model_index.json) loads the same."""
    import json

    from safetensors.torch import save_file

    pipe = _pipe()
    pipe.save_pretrained(tmp_path / "new")
    index = json.loads((tmp_path / "new" / "model_index.json").read_text())
    assert index["_class_name"] == "RagarPipeline"
    assert index["adapter"] == ["ragar.generation.adapter", "PreferenceAdapter"]
    r, p = _emb(2)

    def run(q):
        return q(reference_embeds=r, preference_embeds=p, num_inference_steps=2, output_type="pt",
                 generator=torch.Generator().manual_seed(3)).images

    torch.testing.assert_close(run(RagarPipeline.from_pretrained(tmp_path / "new")), run(pipe), rtol=0, atol=0)
    legacy = tmp_path / "legacy"
    pipe.unet.save_pretrained(legacy / "unet")
    pipe.scheduler.save_pretrained(legacy / "scheduler")
    (legacy / "adapter").mkdir()
    save_file(dict(pipe.adapter.state_dict()), str(legacy / "adapter" / "model.safetensors"))
    (legacy / "adapter" / "config.json").write_text(json.dumps({"type": "preference-adapter", **pipe.adapter.config}))
    torch.testing.assert_close(run(RagarPipeline.from_pretrained(legacy)), run(pipe), rtol=0, atol=0)
