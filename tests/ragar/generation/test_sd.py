"""The real-backbone path with tiny, randomly initialised components: the test writes a Stable
Diffusion 1.5 model directory (UNet, VAE, CLIP text model, a tokenizer from vocab/merges files it
writes), a CLIP vision tower and IP-Adapter weights, then loads them through the same
``from_pretrained`` path a user would use with real weights."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ragar.generation.sd import StableDiffusionPersonalizer, weighted_preference
from recsys.preference import PreferenceConfig

CROSS = 32
CLIP_DIM = 16


def _byte_chars() -> list[str]:
    """GPT-2/CLIP byte-level BPE alphabet: every byte maps to a printable character."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def _tokenizer_files(path):
    chars = _byte_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    path.mkdir(parents=True)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    return len(vocab)


@pytest.fixture(scope="module")
def sd_dirs(tmp_path_factory):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionImg2ImgPipeline, UNet2DConditionModel
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    root = tmp_path_factory.mktemp("sd")
    torch.manual_seed(0)
    n_vocab = _tokenizer_files(root / "tok")
    tok = CLIPTokenizer(str(root / "tok" / "vocab.json"), str(root / "tok" / "merges.txt"), model_max_length=77)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4,
                                out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=CROSS,
                                norm_num_groups=32)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
    text = CLIPTextModel(CLIPTextConfig(bos_token_id=n_vocab - 2, eos_token_id=n_vocab - 1, pad_token_id=n_vocab - 1,
                                        hidden_size=CROSS, intermediate_size=37, num_attention_heads=4,
                                        num_hidden_layers=2, vocab_size=n_vocab, max_position_embeddings=77))
    pipe = StableDiffusionImg2ImgPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
                                          scheduler=DDIMScheduler(), safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    pipe.save_pretrained(root / "sd15")
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=32, image_size=32, patch_size=8,
                                                            projection_dim=CLIP_DIM, num_hidden_layers=2,
                                                            num_attention_heads=4, intermediate_size=37))
    vision.save_pretrained(root / "image_encoder")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        root / "image_encoder")
    save_file(_ip_adapter_weights(unet), str(_mkdir(root / "ip") / "ip-adapter_sd15.safetensors"))
    _sdxl(root, n_vocab)
    # InstructPix2Pix: the same parts, a UNet that reads the reference's latents as 4 more channels
    from diffusers import StableDiffusionInstructPix2PixPipeline

    p2p_unet = UNet2DConditionModel(**{**dict(unet.config), "in_channels": 8})
    StableDiffusionInstructPix2PixPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=p2p_unet,
                                           scheduler=DDIMScheduler(), safety_checker=None, feature_extractor=None,
                                           requires_safety_checker=False).save_pretrained(root / "pix2pix")
    save_file(_ip_adapter_weights(p2p_unet), str(_mkdir(root / "ip-p2p") / "ip-adapter_sd15.safetensors"))
    return root


def _mkdir(p):
    p.mkdir(parents=True, exist_ok=True)
    return p


def _ip_adapter_weights(unet) -> dict[str, torch.Tensor]:
    """IP-Adapter weights in the original layout: image_proj.* and ip_adapter.<k>.to_{k,v}_ip.weight, with k
    counting the cross-attention processors as diffusers' loader does (1, 3, 5, ...)."""
    cross, chans = unet.config.cross_attention_dim, list(unet.config.block_out_channels)
    sd = {"image_proj.proj.weight": torch.randn(4 * cross, CLIP_DIM) * 0.1,
          "image_proj.proj.bias": torch.zeros(4 * cross),
          "image_proj.norm.weight": torch.ones(cross), "image_proj.norm.bias": torch.zeros(cross)}
    key = 1
    for name in unet.attn_processors:
        if name.endswith("attn2.processor"):
            block = name.split(".")[0]
            hidden = chans[-1] if block == "mid_block" else (chans if block == "down_blocks" else chans[::-1])[
                int(name.split(".")[1])]
            sd[f"ip_adapter.{key}.to_k_ip.weight"] = torch.randn(hidden, cross) * 0.1
            sd[f"ip_adapter.{key}.to_v_ip.weight"] = torch.randn(hidden, cross) * 0.1
            key += 2
    return sd


def _sdxl(root, n_vocab):
    """A tiny SDXL: two text encoders (the second with a projection), time-id conditioning."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                                use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
                                transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
                                cross_attention_dim=64, norm_num_groups=32)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
    tcfg = dict(bos_token_id=n_vocab - 2, eos_token_id=n_vocab - 1, pad_token_id=n_vocab - 1, hidden_size=32,
                intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=n_vocab,
                max_position_embeddings=77, projection_dim=32)
    tok = CLIPTokenizer(str(root / "tok" / "vocab.json"), str(root / "tok" / "merges.txt"), model_max_length=77)
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=vae, text_encoder=CLIPTextModel(CLIPTextConfig(**tcfg)), tokenizer=tok,
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**tcfg)), tokenizer_2=tok, unet=unet,
        scheduler=EulerDiscreteScheduler(), requires_aesthetics_score=False)
    pipe.save_pretrained(root / "sdxl")
    save_file(_ip_adapter_weights(unet), str(_mkdir(root / "ip") / "ip-adapter_sdxl.safetensors"))


def test_weighted_preference_rescales_to_history_norms():
    h = torch.tensor([[[3.0, 0.0], [0.0, 5.0]]])
    ref = torch.tensor([[1.0, 0.0]])
    p, w, fb = weighted_preference(h, ref, torch.ones(1, 2, dtype=torch.bool), PreferenceConfig(temperature=0.05))
    assert fb == [None] and w.sum().item() == pytest.approx(1.0)
    # almost all weight on the item aligned with the reference; the norm is the weighted mean norm
    assert w[0, 0] > 0.99 and p.norm().item() == pytest.approx(float((w[0] * torch.tensor([3.0, 5.0])).sum()), rel=1e-5)
    p, w, fb = weighted_preference(h, ref, torch.zeros(1, 2, dtype=torch.bool), PreferenceConfig())
    assert fb == ["empty-history"] and torch.allclose(p, ref)


@pytest.mark.parametrize("backbone", ["sd15", "sdxl"])
def test_ip_adapter_from_local_dirs(sd_dirs, backbone):
    pers = StableDiffusionPersonalizer.from_pretrained(
        sd_dirs / backbone, sd_dirs / "ip", sd_dirs / "image_encoder", backbone=backbone,
        weight_name=f"ip-adapter_{backbone}.safetensors", device="cpu")
    assert pers.pipe.unet.encoder_hid_proj is not None  # the adapter's projection is in the UNet
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
    hist = [rng.integers(0, 255, (40, 40, 3), dtype=np.uint8) for _ in range(4)]
    out = pers(ref, hist, prompt="a red mug", num_inference_steps=4, num_images_per_request=2,
               generator=torch.Generator().manual_seed(0))
    side = 8 * pers.pipe.vae_scale_factor  # the UNet sample size times the VAE factor
    assert len(out.images) == 2 and out.images[0].size == (side, side)
    assert out.weights.sum() == pytest.approx(1.0, abs=1e-5) and out.fallback is None
    # the preference changes the image: another history gives other pixels, the same seed the same ones
    again = pers(ref, hist, prompt="a red mug", num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    other = pers(ref, hist[::-1][:1], prompt="a red mug", num_inference_steps=4,
                 generator=torch.Generator().manual_seed(0))
    a, b, c = (np.asarray(x.images[0], dtype=int) for x in (out, again, other))
    assert np.array_equal(a, b) and np.abs(a - c).max() > 0
    empty = pers(ref, [], num_inference_steps=2, guidance_scale=1.0)
    assert empty.fallback == "empty-history" and len(empty.images) == 1


def test_instruct_pix2pix_weights_condition_on_the_reference(sd_dirs):
    pers = StableDiffusionPersonalizer.from_pretrained(sd_dirs / "pix2pix", sd_dirs / "ip-p2p",
                                                       sd_dirs / "image_encoder", device="cpu")
    assert pers.backbone == "instruct-pix2pix" and pers.pipe.unet.config.in_channels == 8
    rng = np.random.default_rng(1)
    hist = [rng.integers(0, 255, (40, 40, 3), dtype=np.uint8) for _ in range(3)]
    ref_a, ref_b = np.zeros((40, 40, 3), np.uint8), np.full((40, 40, 3), 255, np.uint8)

    def run(ref, h=hist, scale=1.5):
        return np.asarray(pers(ref, h, num_inference_steps=3, image_guidance_scale=scale,
                               generator=torch.Generator().manual_seed(0)).images[0], dtype=int)

    a = run(ref_a)
    assert a.shape == (8 * pers.pipe.vae_scale_factor,) * 2 + (3,)
    assert np.array_equal(a, run(ref_a))
    assert np.abs(a - run(ref_b)).max() > 0  # the reference is a condition, not only a starting point
    assert np.abs(a - run(ref_a, hist[:1])).max() > 0  # so is the preference
    assert np.abs(a - run(ref_a, scale=3.0)).max() > 0  # and the image guidance scale acts


def test_missing_directories_are_clear_errors(sd_dirs, tmp_path):
    with pytest.raises(FileNotFoundError, match="model directory"):
        StableDiffusionPersonalizer.from_pretrained(tmp_path / "nope", sd_dirs / "ip", sd_dirs / "image_encoder")
    with pytest.raises(FileNotFoundError, match="weight_name"):
        StableDiffusionPersonalizer.from_pretrained(sd_dirs / "sd15", sd_dirs / "ip", sd_dirs / "image_encoder",
                                                    weight_name="other.safetensors")
