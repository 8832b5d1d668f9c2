"""The reference image conditions the generator (issue #19): it reaches the UNet as extra input
channels, any image a caller can hand over is converted, and a bad one is a clear error."""

import io

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, UNet2DConditionModel
from PIL import Image

from ragar.generation.adapter import AdapterConfig, PreferenceAdapter
from ragar.generation.pipeline import RagarPipeline
from recsys.data.images import ImageInputError

D, C, S = 16, 32, 16


def _pipe(latent: bool = False):
    torch.manual_seed(0)
    vae = None
    ch, size = 3, S
    if latent:
        from ragar.generation.autoencoder import build_autoencoder, downscale_of
        from ragar.generation.configs import AutoencoderConfig

        vae = build_autoencoder(AutoencoderConfig(image_size=S, channels=8)).eval()
        ch, size = vae.config.latent_channels, S // downscale_of(vae)
    unet = UNet2DConditionModel(sample_size=size, in_channels=2 * ch, out_channels=ch, layers_per_block=1,
                                block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=C,
                                attention_head_dim=8, norm_num_groups=8)
    adapter = PreferenceAdapter.from_sizes(AdapterConfig(embed_dim=D, cross_attention_dim=C, tokens=2))
    pipe = RagarPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=100), adapter=adapter, vae=vae)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _emb(b=1):
    g = torch.Generator().manual_seed(0)
    return torch.randn(b, D, generator=g), torch.randn(b, D, generator=g)


def _run(pipe, image, b=1):
    r, p = _emb(b)
    return pipe(reference_embeds=r, preference_embeds=p, image=image, num_inference_steps=2,
                generator=torch.Generator().manual_seed(3)).images


@pytest.mark.parametrize("latent", [False, True])
def test_the_reference_image_reaches_the_unet(latent):
    pipe = _pipe(latent)
    assert pipe.conditions_on_image and pipe.image_size == S
    seen = []
    hook = pipe.unet.conv_in.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach().clone()))
    red, blue = np.zeros((S, S, 3), np.uint8), np.zeros((S, S, 3), np.uint8)
    red[..., 0], blue[..., 2] = 255, 255
    a = _run(pipe, red)
    n_red = len(seen)
    b = _run(pipe, blue)
    hook.remove()
    ch = pipe.unet.config.out_channels
    x = seen[0]
    assert x.shape[:2] == (3, 2 * ch)  # three guidance branches; noisy sample + reference channels
    expected = pipe.prepare_image(red, 1)
    if latent:
        from ragar.generation.autoencoder import encode

        expected = encode(pipe.vae, expected)
    torch.testing.assert_close(x[1:, ch:], expected.expand(2, -1, -1, -1))  # (r, ∅) and (r, p) see it
    assert torch.count_nonzero(x[0, ch:]) == 0  # the unconditional branch sees zeros
    assert not torch.equal(seen[n_red][1:, ch:], x[1:, ch:])  # another reference, other channels
    assert a.shape == (1, S, S, 3)
    assert not np.array_equal(a, b)  # same seed and embeddings: the image decides
    np.testing.assert_array_equal(a, _run(pipe, red))


def test_an_image_conditioned_generator_needs_the_image():
    with pytest.raises(ValueError, match="pass image="):
        _run(_pipe(), None)
    with pytest.raises(ValueError, match="2 reference images for 3 requests"):
        _run(_pipe(), [np.zeros((S, S, 3), np.uint8)] * 2, b=3)


def _png(im: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


ANY_IMAGE = {
    "grayscale": Image.new("L", (40, 30), 120),
    "rgba": Image.new("RGBA", (20, 20), (255, 0, 0, 128)),
    "16-bit png": _png(Image.fromarray(np.full((24, 24), 40000, np.uint16))),
    "16-bit array": np.full((24, 24, 3), 40000, np.uint16),
    "jpeg": _png(Image.new("RGB", (50, 70), (0, 128, 255)), "JPEG"),
    "tiny": Image.new("RGB", (1, 1), (9, 9, 9)),
    "large": Image.new("RGB", (1500, 900), (200, 10, 10)),
    "float tensor": torch.zeros(1, 3, 33, 33),
    "palette": Image.new("P", (16, 16), 3),
}


@pytest.mark.parametrize("kind", sorted(ANY_IMAGE))
def test_any_reference_image_is_converted_and_resized(kind):
    pipe = _pipe()
    x = pipe.prepare_image(ANY_IMAGE[kind], 2)
    assert x.shape == (2, 3, S, S) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert _run(pipe, ANY_IMAGE[kind]).shape == (1, S, S, 3)


def test_16_bit_is_scaled_not_clipped():
    x = _pipe().prepare_image(np.full((8, 8, 3), 32896, np.uint16), 1)  # mid-grey in 16 bits
    assert abs(float(x.mean())) < 0.02


@pytest.mark.parametrize("bad, match", [
    (b"not an image at all", "not a readable image"),
    (np.zeros((5000, 5000), np.uint8), "exceeds"),
    (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
    (torch.full((1, 3, 8, 8), float("nan")), "finite"),
    (np.zeros((8, 8, 2), np.uint8), "not an HxWx3"),
])
def test_bad_references_are_clear_errors(bad, match):
    with pytest.raises(ImageInputError, match=match):
        _pipe().prepare_image(bad, 1)


def test_autoencode_returns_what_the_decoder_makes_of_any_image():
    from ragar.generation.autoencoder import decode, encode

    pipe = _pipe(latent=True)
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (S, S, 3), dtype=np.uint8), rng.integers(0, 256, (2 * S, 2 * S), dtype=np.uint8)]
    out = pipe.autoencode(imgs)
    assert out.shape == (2, S, S, 3) and out.dtype == np.uint8
    with torch.no_grad():  # the same as the decoder's own round trip of the prepared (resized, RGB) images
        x = decode(pipe.vae, encode(pipe.vae, pipe.prepare_image(imgs, 2)))
    want = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(out, want)
    tensor = torch.from_numpy(np.stack([imgs[0]] * 3)).permute(0, 3, 1, 2).float() / 127.5 - 1  # a batch tensor
    np.testing.assert_array_equal(pipe.autoencode(tensor), np.stack([out[0]] * 3))
    assert not np.array_equal(out[0], imgs[0])  # an untrained autoencoder loses the image
    with pytest.raises(ValueError, match="pixel space"):
        _pipe(latent=False).autoencode(imgs)
