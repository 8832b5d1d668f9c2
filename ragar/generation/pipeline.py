"""``RagarPipeline``: a diffusers pipeline that renders a reference the way a user would prefer it.

Registered components: ``unet`` (``UNet2DConditionModel``), ``scheduler`` (any diffusers scheduler),
``adapter`` (:class:`PreferenceAdapter`) and, optionally, ``vae`` (an ``AutoencoderTiny``: the UNet
then denoises its latents, :mod:`ragar.generation.autoencoder`).

The reference conditions the UNet twice. Its **pixels** (or latents) are concatenated with the
noisy sample as extra input channels, as InstructPix2Pix does, so the shape, parts and pose are
there to keep rather than to re-invent; its **embedding** and the user's **preference embedding**
are cross-attention tokens (the adapter). A generator trained before image conditioning (its
UNet's ``in_channels`` equals ``out_channels``) reads the embeddings only, and ignores ``image``.

Two guidance scales, compositional as in InstructPix2Pix:

    eps = eps(∅, ∅) + s_ref · (eps(r, ∅) − eps(∅, ∅)) + s_pref · (eps(r, p) − eps(r, ∅))

where ∅ for the reference drops both its image (zeros) and its tokens, so
``reference_guidance_scale`` pulls towards the reference and ``preference_guidance_scale`` towards
the user's preference; the three branches run as one batch.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from ragar.generation.configs import GUIDANCE_SCALES

SCHEDULERS = {"ddim": "DDIMScheduler", "ddpm": "DDPMScheduler", "euler": "EulerDiscreteScheduler",
              "dpm": "DPMSolverMultistepScheduler"}


def weights_fingerprint(pipeline) -> str | None:
    """:meth:`RagarPipeline.fingerprint` of ``pipeline``, or None for a pipeline without one (the
    Stable Diffusion path's): what a resumable job's manifest records of the generator."""
    fp = getattr(pipeline, "fingerprint", None)
    return fp() if callable(fp) else None


@dataclass
class RagarPipelineOutput(BaseOutput):
    images: np.ndarray | torch.Tensor   # (B * N, H, W, 3) uint8 for "np", or (B * N, 3, H, W) in [-1, 1] for "pt"
    timings: dict


ImageInput = Image.Image | np.ndarray | torch.Tensor | str | Path | bytes


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, S, S) float in [-1, 1] to (B, S, S, 3) uint8."""
    return ((images + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class RagarPipeline(DiffusionPipeline):
    _optional_components: ClassVar[list[str]] = ["vae"]

    def __init__(self, unet, scheduler, adapter, vae=None):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, adapter=adapter, vae=vae)

    @property
    def conditions_on_image(self) -> bool:
        """Whether the UNet takes the reference image as extra input channels."""
        return self.unet.config.in_channels == 2 * self.unet.config.out_channels

    @property
    def image_size(self) -> int:
        """The side of the images it renders (and of the reference it reads), in pixels."""
        size = self.unet.config.sample_size
        if self.vae is not None:
            from ragar.generation.autoencoder import downscale_of

            size *= downscale_of(self.vae)
        return size

    def fingerprint(self) -> str:
        """A sha256 of every component's weights and config (the scheduler's too), as loaded.

        A resumable job (the replay) keeps it in its manifest, so a rerun after the weights
        changed is refused instead of merging shards from two generators."""
        import hashlib
        import json

        h = hashlib.sha256()
        for name, comp in sorted(self.components.items()):
            if comp is None:
                continue
            h.update(name.encode())
            h.update(json.dumps(dict(comp.config), sort_keys=True, default=str).encode())
            if isinstance(comp, torch.nn.Module):
                for key, t in sorted(comp.state_dict().items()):
                    h.update(key.encode())
                    h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()

    def prepare_image(self, image: ImageInput | list[ImageInput], batch: int) -> torch.Tensor:
        """References as (B, 3, S, S) in [-1, 1] at :attr:`image_size`: a PIL image, an HxWx{1,3,4}
        array (8 or 16 bit), an encoded file (path or bytes) or a list of them, each converted to RGB
        and resized; or a float tensor (B, 3, H, W) in [-1, 1], resized. Undecodable, oversized or
        non-finite input raises ``ImageInputError`` (a ``ValueError``)."""
        from recsys.data.images import ImageInputError, load_rgb

        size = self.image_size
        if torch.is_tensor(image) and image.is_floating_point() and image.ndim == 4:
            if image.shape[1] != 3 or not torch.isfinite(image).all():
                raise ImageInputError(f"a reference tensor must be finite (B, 3, H, W), got {tuple(image.shape)}")
            x = image.float()
            if x.shape[-2:] != (size, size):
                x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                                    align_corners=False)
        else:
            items = image if isinstance(image, list) else [image]
            arr = np.stack([load_rgb(i.numpy() if torch.is_tensor(i) else i, size=size, resample=Image.BICUBIC)
                            for i in items])
            x = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1
        if len(x) == 1 and batch > 1:
            x = x.expand(batch, -1, -1, -1)
        if len(x) != batch:
            raise ValueError(f"{len(x)} reference images for {batch} requests")
        return x.clamp(-1, 1)

    @torch.no_grad()
    def autoencode(self, image: ImageInput | list[ImageInput]) -> np.ndarray:
        """``image`` (whatever :meth:`prepare_image` takes) encoded and decoded by the ``vae`` at
        :attr:`image_size`, as (B, S, S, 3) uint8: the best a latent generator can return of it, since
        everything it draws passes through this decoder."""
        if self.vae is None:
            raise ValueError("this generator works in pixel space: it has no autoencoder")
        from ragar.generation.autoencoder import decode, encode

        batched = isinstance(image, list) or (torch.is_tensor(image) and image.is_floating_point() and image.ndim == 4)
        batch = len(image) if batched else 1
        x = self.prepare_image(image, batch).to(self.vae.device, self.vae.dtype)
        out = torch.cat([decode(self.vae, encode(self.vae, x[i:i + 64])) for i in range(0, batch, 64)])
        return _to_uint8(out.float().clamp(-1, 1))

    def save_pretrained(self, path: str | Path, half: bool = False, **kwargs) -> Path:
        """diffusers' own layout: ``model_index.json`` and ``unet/``, ``adapter/``, ``scheduler/``
        (float16 weights with ``half``: half the bytes to ship; they load back in the dtype asked
        for). ``DiffusionPipeline.from_pretrained`` opens the result as well as :meth:`from_pretrained`."""
        path = Path(path)
        pipe = self
        if half:
            pipe = RagarPipeline(copy.deepcopy(self.unet).half(), self.scheduler, copy.deepcopy(self.adapter).half(),
                                 None if self.vae is None else copy.deepcopy(self.vae).half())
        DiffusionPipeline.save_pretrained(pipe, path, safe_serialization=True, **kwargs)
        if self.vae is not None:
            from ragar.generation.autoencoder import drop_unread_config

            drop_unread_config(path / "vae")
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, scheduler: str = "ddim", torch_dtype: torch.dtype = torch.float32
                        ) -> RagarPipeline:
        """Load what :meth:`save_pretrained` (or ``ragar train generator``) wrote; ``scheduler``
        picks the sampler (``ddim``, ``ddpm``, ``euler``, ``dpm``) over the trained noise schedule;
        ``torch_dtype`` the precision the weights are loaded in (then ``.to(device)``). A directory
        written before the pipeline kept a ``model_index.json`` still loads."""
        import diffusers
        from diffusers import DDPMScheduler, UNet2DConditionModel

        from ragar.generation.adapter import PreferenceAdapter

        path = Path(path)
        missing = [d for d in ("unet", "adapter", "scheduler") if not (path / d).is_dir()]
        if missing:
            raise FileNotFoundError(f"{path} is not a RAGAR generator: missing {missing}")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {scheduler!r}; choose from {sorted(SCHEDULERS)}")
        if (path / "model_index.json").exists():
            pipe = super().from_pretrained(path, dtype=torch_dtype, local_files_only=True)
        else:
            pipe = cls(unet=UNet2DConditionModel.from_pretrained(path / "unet", torch_dtype=torch_dtype),
                       scheduler=DDPMScheduler.from_pretrained(path / "scheduler"),
                       adapter=PreferenceAdapter.from_pretrained(path / "adapter", torch_dtype=torch_dtype))
        pipe.register_modules(scheduler=getattr(diffusers, SCHEDULERS[scheduler]).from_config(pipe.scheduler.config))
        pipe.unet.eval()
        pipe.adapter.eval()
        if pipe.vae is not None:
            pipe.vae.eval()
        return pipe

    @torch.no_grad()
    def __call__(self, reference_embeds: torch.Tensor, preference_embeds: torch.Tensor,
                 image: ImageInput | list[ImageInput] | None = None,
                 num_images_per_request: int = 1, reference_guidance_scale: float = GUIDANCE_SCALES[0],
                 preference_guidance_scale: float = GUIDANCE_SCALES[1], num_inference_steps: int = 25,
                 generator: torch.Generator | list[torch.Generator] | None = None, output_type: str = "np",
                 return_dict: bool = True):
        """Render each request's reference as its preference asks. ``image``: the references
        (one per request, or one for all; see :meth:`prepare_image`), required when the UNet
        conditions on the image; ``reference_embeds`` / ``preference_embeds``: (B, D)."""
        t0 = time.perf_counter()
        if num_images_per_request < 1:
            raise ValueError("num_images_per_request must be >= 1")
        if output_type not in ("np", "pt"):
            raise ValueError(f"output_type must be 'np' or 'pt', not {output_type!r}")
        device, dtype = self._execution_device, self.unet.dtype
        ref = torch.as_tensor(reference_embeds).to(device=device, dtype=dtype)
        pref = torch.as_tensor(preference_embeds).to(device=device, dtype=dtype)
        if ref.shape != pref.shape:
            raise ValueError(f"reference {tuple(ref.shape)} and preference {tuple(pref.shape)} embeddings differ")
        cond_image = None
        if self.conditions_on_image:
            if image is None:
                raise ValueError("this generator renders a reference image: pass image=")
            cond_image = self.prepare_image(image, len(ref)).to(device=device, dtype=dtype)
            if self.vae is not None:
                from ragar.generation.autoencoder import encode

                cond_image = encode(self.vae, cond_image.to(self.vae.dtype)).to(dtype)
        n = num_images_per_request
        ref, pref = ref.repeat_interleave(n, 0), pref.repeat_interleave(n, 0)
        b = len(ref)
        keep = torch.zeros(b, dtype=torch.bool, device=device)  # drop flags: False keeps a condition
        drop = torch.ones(b, dtype=torch.bool, device=device)
        cond = torch.cat([self.adapter(ref, pref, drop, drop),   # (∅, ∅)
                          self.adapter(ref, pref, keep, drop),   # (r, ∅)
                          self.adapter(ref, pref, keep, keep)])  # (r, p)
        if cond_image is not None:  # the unconditional branch sees zeros where the reference was
            img = cond_image.repeat_interleave(n, 0)
            cond_image = torch.cat([torch.zeros_like(img), img, img])
        size = self.unet.config.sample_size
        latents = randn_tensor((b, self.unet.config.out_channels, size, size), generator=generator, device=device,
                               dtype=cond.dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        latents = latents * self.scheduler.init_noise_sigma
        for t in self.progress_bar(self.scheduler.timesteps):
            x = self.scheduler.scale_model_input(torch.cat([latents] * 3), t)
            if cond_image is not None:
                x = torch.cat([x, cond_image], dim=1)
            eps_u, eps_r, eps_rp = self.unet(x, t, encoder_hidden_states=cond).sample.chunk(3)
            eps = eps_u + reference_guidance_scale * (eps_r - eps_u) + preference_guidance_scale * (eps_rp - eps_r)
            latents = self.scheduler.step(eps, t, latents, generator=generator).prev_sample
        if self.vae is not None:
            from ragar.generation.autoencoder import decode

            latents = torch.cat([decode(self.vae, latents[i:i + 64]) for i in range(0, b, 64)])
        images = latents.float().clamp(-1, 1)  # to 8 bits from float32: bfloat16 alone would band
        if output_type == "np":
            images = _to_uint8(images)
        timings = {"seconds": time.perf_counter() - t0, "steps": num_inference_steps, "images": b}
        if not return_dict:
            return images, timings
        return RagarPipelineOutput(images=images, timings=timings)
