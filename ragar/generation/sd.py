"""The real backbone: Stable Diffusion 1.5 or SDXL with an IP-Adapter, from local directories.

The preference embedding goes in as ``ip_adapter_image_embeds``. It is computed in the IP-Adapter's
own image space (the CLIP vision tower it was trained with, ``image_embeds`` of
``CLIPVisionModelWithProjection``) by the same retrieval weighting as the embedded model
(:mod:`recsys.preference`). IP-Adapter was trained on *unnormalised* CLIP embeddings, while the
weighting averages unit vectors, so the weighted direction is rescaled to the weighted mean norm
of the history embeddings it came from. The reference goes in through img2img (``strength`` says
how far the result may move from it), or, given InstructPix2Pix weights (a UNet with 8 input
channels: noisy latents + the reference's latents), as the concatenated image condition with its
own ``image_guidance_scale``, the same shape as the embedded generator; its title, if any, can be
the prompt.

Everything loads with ``local_files_only=True``: nothing is downloaded. See docs/REAL_BACKBONE.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ragar.encoders.base import ImageLike, load_rgb
from recsys.preference import PreferenceConfig, RetrievalPreference

Backbone = Literal["sd15", "sdxl", "instruct-pix2pix"]


class IPAdapterImageSpace:
    """The IP-Adapter's image encoder: raw (unnormalised) projected CLIP image embeddings."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"IP-Adapter image encoder directory {path} does not exist")
        self.model = CLIPVisionModelWithProjection.from_pretrained(path, local_files_only=True, torch_dtype=dtype
                                                                   ).to(device).eval().requires_grad_(False)
        pp = path / "preprocessor_config.json"
        self.processor = (CLIPImageProcessor.from_pretrained(path, local_files_only=True) if pp.exists()
                          else CLIPImageProcessor(size=self.model.config.image_size,
                                                  crop_size=self.model.config.image_size))
        self.device, self.dtype = device, dtype

    @torch.no_grad()
    def encode(self, images: list[ImageLike], batch_size: int = 32) -> torch.Tensor:
        out = []
        for i in range(0, len(images), batch_size):
            px = self.processor(images=[load_rgb(x) for x in images[i:i + batch_size]], return_tensors="pt")
            out.append(self.model(pixel_values=px.pixel_values.to(self.device, self.dtype)).image_embeds.float())
        return torch.cat(out)


def weighted_preference(history: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor,
                        config: PreferenceConfig) -> tuple[torch.Tensor, torch.Tensor, list[str | None]]:
    """RAGAR (or a baseline) over raw embeddings: the weighted unit direction, rescaled to the
    weighted mean norm of the history (or the reference's norm where it falls back)."""
    res = RetrievalPreference(config)(history, reference, mask)
    norms = history.norm(dim=-1).masked_fill(~mask, 0)
    w = res.weights
    scale = torch.where(w.sum(1) > 0, (w * norms).sum(1) / w.sum(1).clamp_min(1e-12), reference.norm(dim=-1))
    direction = torch.nn.functional.normalize(res.embedding, dim=-1)
    return direction * scale[:, None], w, res.fallback


@dataclass
class SDOutput:
    images: list              # PIL images
    weights: np.ndarray       # (N,) history weights used
    fallback: str | None
    timings: dict


class StableDiffusionPersonalizer:
    """img2img SD 1.5 / SDXL + IP-Adapter, conditioned on the retrieval-weighted preference."""

    def __init__(self, pipe, image_space: IPAdapterImageSpace, backbone: Backbone,
                 preference: PreferenceConfig | None = None):
        self.pipe = pipe
        self.image_space = image_space
        self.backbone = backbone
        self.preference = preference or PreferenceConfig()

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, ip_adapter_dir: str | Path, image_encoder_dir: str | Path, *,
                        backbone: Backbone = "sd15", weight_name: str = "ip-adapter_sd15.safetensors",
                        ip_adapter_scale: float = 0.7, device: str | None = None, dtype: torch.dtype | None = None,
                        preference: PreferenceConfig | None = None) -> StableDiffusionPersonalizer:
        """Load from local directories (a diffusers model dir, the IP-Adapter weights dir, and the
        CLIP vision tower the adapter was trained with). ``device`` defaults to CUDA when there is one.
        An SD 1.5 directory whose UNet takes 8 input channels is InstructPix2Pix: it loads as
        ``backbone="instruct-pix2pix"`` (the reference is concatenated, not noised)."""
        import json

        from diffusers import (
            StableDiffusionImg2ImgPipeline,
            StableDiffusionInstructPix2PixPipeline,
            StableDiffusionXLImg2ImgPipeline,
        )

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = dtype or (torch.float16 if device.startswith("cuda") else torch.float32)
        for p, what in ((model_dir, "model"), (ip_adapter_dir, "IP-Adapter")):
            if not Path(p).is_dir():
                raise FileNotFoundError(f"{what} directory {p} does not exist")
        if not (Path(ip_adapter_dir) / weight_name).exists():
            raise FileNotFoundError(f"{Path(ip_adapter_dir) / weight_name} not found (set weight_name)")
        unet_cfg = Path(model_dir) / "unet" / "config.json"
        if backbone == "sd15" and unet_cfg.exists() and json.loads(unet_cfg.read_text()).get("in_channels") == 8:
            backbone = "instruct-pix2pix"
        pipe_cls = {"sdxl": StableDiffusionXLImg2ImgPipeline, "sd15": StableDiffusionImg2ImgPipeline,
                    "instruct-pix2pix": StableDiffusionInstructPix2PixPipeline}[backbone]
        extra = {} if backbone == "sdxl" else {"safety_checker": None, "requires_safety_checker": False}
        pipe = pipe_cls.from_pretrained(model_dir, torch_dtype=dtype, local_files_only=True, **extra)
        pipe.load_ip_adapter(str(ip_adapter_dir), subfolder="", weight_name=weight_name, image_encoder_folder=None,
                             local_files_only=True)
        pipe.set_ip_adapter_scale(ip_adapter_scale)
        pipe.to(device)
        return cls(pipe, IPAdapterImageSpace(image_encoder_dir, device, dtype), backbone, preference)

    def __call__(self, reference: ImageLike, history: list[ImageLike] | torch.Tensor, *, prompt: str = "",
                 method: str | None = None, strength: float = 0.6, guidance_scale: float = 5.0,
                 image_guidance_scale: float = 1.5, num_inference_steps: int = 30, num_images_per_request: int = 1,
                 height: int | None = None, generator: torch.Generator | None = None) -> SDOutput:
        """``history``: the user's images, or their embeddings in the IP-Adapter space (N, D).
        ``strength`` is img2img's; ``image_guidance_scale`` InstructPix2Pix's (fidelity to the reference)."""
        t0 = time.perf_counter()
        ref_img = load_rgb(reference)
        ref = self.image_space.encode([ref_img])
        hist = history if isinstance(history, torch.Tensor) else (
            self.image_space.encode(list(history)) if len(history) else torch.zeros(0, ref.shape[1]))
        cfg = self.preference if method is None else self.preference.model_copy(update={"method": method})
        mask = torch.ones(1, len(hist), dtype=torch.bool)
        if len(hist) == 0:
            hist, mask = torch.zeros(1, ref.shape[1]), torch.zeros(1, 1, dtype=torch.bool)
        pref, w, fallback = weighted_preference(hist[None].float(), ref, mask, cfg)
        t1 = time.perf_counter()
        dtype = self.pipe.unet.dtype
        size = height or self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor
        from PIL import Image

        init = Image.fromarray(ref_img).resize((size, size))
        zero = torch.zeros_like(pref)
        if self.backbone == "instruct-pix2pix":
            # its three branches: (text + preference, image), (∅, image), (∅, ∅)
            guided = guidance_scale > 1 and image_guidance_scale >= 1
            embeds = [(torch.cat([pref, zero, zero]) if guided else pref)[:, None, :].to(self.pipe.device, dtype)]
            # diffusers 0.42's InstructPix2Pix pipeline hands the UNet the IP-Adapter embeddings only
            # when it encoded ip_adapter_image itself, not for ip_adapter_image_embeds: pass them in
            expanded = self.pipe.prepare_ip_adapter_image_embeds(None, embeds, self.pipe.device,
                                                                 num_images_per_request, guided)

            def add_embeds(module, args, kwargs):
                if kwargs.get("added_cond_kwargs") is None:
                    kwargs["added_cond_kwargs"] = {"image_embeds": expanded}
                return args, kwargs

            hook = self.pipe.unet.register_forward_pre_hook(add_embeds, with_kwargs=True)
            try:
                images = self.pipe(prompt=prompt, image=init, guidance_scale=guidance_scale,
                                   image_guidance_scale=image_guidance_scale, num_inference_steps=num_inference_steps,
                                   num_images_per_prompt=num_images_per_request, ip_adapter_image_embeds=embeds,
                                   generator=generator).images
            finally:
                hook.remove()
        else:
            # (negative, positive) for classifier-free guidance, else the positive alone: (2 or 1, 1 image, D)
            embeds = (torch.cat([zero, pref]) if guidance_scale > 1 else pref)[:, None, :]
            images = self.pipe(prompt=prompt, image=init, strength=strength, guidance_scale=guidance_scale,
                               num_inference_steps=num_inference_steps, num_images_per_prompt=num_images_per_request,
                               ip_adapter_image_embeds=[embeds.to(self.pipe.device, dtype)], generator=generator
                               ).images
        return SDOutput(images, w[0].numpy(), fallback[0],
                        {"retrieval_s": t1 - t0, "generation_s": time.perf_counter() - t1})
