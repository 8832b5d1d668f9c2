"""``RagarPipeline``: a diffusers pipeline that renders a reference the way a user would prefer it.

Registered components: ``unet`` (``UNet2DConditionModel``), ``scheduler`` (any diffusers scheduler),
``adapter`` (:class:`PreferenceAdapter`). Two guidance scales, compositional as in InstructPix2Pix:

    eps = eps(∅, ∅) + s_ref · (eps(r, ∅) − eps(∅, ∅)) + s_pref · (eps(r, p) − eps(r, ∅))

so ``reference_guidance_scale`` pulls towards the reference and ``preference_guidance_scale``
towards the user's preference; the three branches run as one batch.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

SCHEDULERS = {"ddim": "DDIMScheduler", "ddpm": "DDPMScheduler", "euler": "EulerDiscreteScheduler",
              "dpm": "DPMSolverMultistepScheduler"}


@dataclass
class RagarPipelineOutput(BaseOutput):
    images: np.ndarray | torch.Tensor   # (B * N, H, W, 3) uint8 for "np", or (B * N, 3, H, W) in [-1, 1] for "pt"
    timings: dict


class RagarPipeline(DiffusionPipeline):
    def __init__(self, unet, scheduler, adapter):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, adapter=adapter)

    def save_pretrained(self, path: str | Path, half: bool = False, **kwargs) -> Path:
        """diffusers' own layout: ``model_index.json`` and ``unet/``, ``adapter/``, ``scheduler/``
        (float16 weights with ``half``: half the bytes to ship; they load back in the dtype asked
        for). ``DiffusionPipeline.from_pretrained`` opens the result as well as :meth:`from_pretrained`."""
        path = Path(path)
        pipe = self
        if half:
            pipe = RagarPipeline(copy.deepcopy(self.unet).half(), self.scheduler, copy.deepcopy(self.adapter).half())
        DiffusionPipeline.save_pretrained(pipe, path, safe_serialization=True, **kwargs)
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
        return pipe

    @torch.no_grad()
    def __call__(self, reference_embeds: torch.Tensor, preference_embeds: torch.Tensor,
                 num_images_per_request: int = 1, reference_guidance_scale: float = 2.0,
                 preference_guidance_scale: float = 2.0, num_inference_steps: int = 25,
                 generator: torch.Generator | list[torch.Generator] | None = None, output_type: str = "np",
                 return_dict: bool = True):
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
        n = num_images_per_request
        ref, pref = ref.repeat_interleave(n, 0), pref.repeat_interleave(n, 0)
        b = len(ref)
        keep = torch.zeros(b, dtype=torch.bool, device=device)  # drop flags: False keeps a condition
        drop = torch.ones(b, dtype=torch.bool, device=device)
        cond = torch.cat([self.adapter(ref, pref, drop, drop),   # (∅, ∅)
                          self.adapter(ref, pref, keep, drop),   # (r, ∅)
                          self.adapter(ref, pref, keep, keep)])  # (r, p)
        size = self.unet.config.sample_size
        latents = randn_tensor((b, self.unet.config.in_channels, size, size), generator=generator, device=device,
                               dtype=cond.dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        latents = latents * self.scheduler.init_noise_sigma
        for t in self.progress_bar(self.scheduler.timesteps):
            x = self.scheduler.scale_model_input(torch.cat([latents] * 3), t)
            eps_u, eps_r, eps_rp = self.unet(x, t, encoder_hidden_states=cond).sample.chunk(3)
            eps = eps_u + reference_guidance_scale * (eps_r - eps_u) + preference_guidance_scale * (eps_rp - eps_r)
            latents = self.scheduler.step(eps, t, latents, generator=generator).prev_sample
        images = latents.float().clamp(-1, 1)  # to 8 bits from float32: bfloat16 alone would band
        if output_type == "np":
            images = ((images + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        timings = {"seconds": time.perf_counter() - t0, "steps": num_inference_steps, "images": b}
        if not return_dict:
            return images, timings
        return RagarPipelineOutput(images=images, timings=timings)
