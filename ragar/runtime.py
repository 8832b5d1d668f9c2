"""Where the models run: one device and dtype setting that every model the project loads honours.

``runtime.device`` is ``auto`` (CUDA when there is one, else the CPU, logged), ``cpu``, ``cuda`` or
``cuda:N``; ``runtime.dtype`` is ``auto`` (float32 on the CPU, bfloat16 on a CUDA card that has it,
else float16), ``float32``, ``float16`` or ``bfloat16``. The config holds it (``runtime:``), the
service reads ``RAGAR_DEVICE`` / ``RAGAR_DTYPE`` and the computing commands take ``--device``.

Asking for CUDA on a machine without it is an error (:class:`DeviceUnavailableError`, exit 2 on the
command line), never a silent fall back: a run that was meant for a GPU and quietly took the CPU
wastes hours. Only ``auto`` falls back, and it says which it chose.

faiss and LightGBM stay on the CPU; noise is drawn by a ``torch.Generator`` on the device
(:meth:`Runtime.generator`), so a seed gives the same images on the same device, and on the CPU the
same images as before this setting existed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("ragar.runtime")

DEVICE_PATTERN = r"^(auto|cpu|cuda|cuda:[0-9]+)$"
DtypeName = Literal["auto", "float32", "float16", "bfloat16"]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class RuntimeConfig(BaseModel):
    """``runtime:`` in a config file."""

    model_config = ConfigDict(extra="forbid")
    device: str = Field("auto", pattern=DEVICE_PATTERN, description="auto | cpu | cuda | cuda:N")
    dtype: DtypeName = Field("auto", description="auto (float32 on the CPU, bfloat16/float16 on CUDA) | "
                             "float32 | float16 | bfloat16")


class DeviceUnavailableError(RuntimeError):
    """The setting names a device this machine does not have."""


@dataclass(frozen=True)
class Runtime:
    """A resolved setting: the device and the dtype models compute in."""

    device: torch.device
    dtype: torch.dtype = torch.float32

    @classmethod
    def resolve(cls, device: str | torch.device | None = "auto", dtype: str | torch.dtype | None = "auto") -> Runtime:
        dev = resolve_device(device)
        return cls(dev, resolve_dtype(dtype, dev))

    @classmethod
    def from_config(cls, cfg: RuntimeConfig, device: str | None = None, dtype: str | None = None) -> Runtime:
        """The config's setting, with a command line's ``--device`` / ``--dtype`` over it."""
        return cls.resolve(device or cfg.device, dtype or cfg.dtype)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def generator(self, seed: int) -> torch.Generator:
        """A seeded generator on the device (on the CPU: ``torch.Generator().manual_seed(seed)``)."""
        return torch.Generator(device=self.device).manual_seed(int(seed))

    @property
    def card(self) -> str:
        """The GPU's name (``NVIDIA H100 80GB HBM3``), else the device type."""
        return torch.cuda.get_device_name(self.device) if self.is_cuda else self.device.type

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def describe(self) -> str:
        return f"{self.device} ({self.card}, {self.dtype_name})"

    def memory(self) -> dict[str, int]:
        """Bytes the caching allocator holds on the device (empty off CUDA)."""
        if not self.is_cuda:
            return {}
        return {"allocated": int(torch.cuda.memory_allocated(self.device)),
                "reserved": int(torch.cuda.memory_reserved(self.device))}


CPU = Runtime(torch.device("cpu"), torch.float32)


def _local_cuda_index() -> int:
    """Under a launcher with several processes on one machine (``accelerate launch``, ``torchrun``),
    process k takes CUDA device k; a single process takes device 0."""
    return int(os.environ.get("LOCAL_RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def resolve_device(spec: str | torch.device | None) -> torch.device:
    """``auto`` -> CUDA if available else the CPU (logged); ``cuda``/``cuda:N`` must exist. ``auto``
    and ``cuda`` name no card: each launched process takes its own (:func:`_local_cuda_index`)."""
    if isinstance(spec, torch.device):
        return spec
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        dev = torch.device("cuda", _local_cuda_index()) if torch.cuda.is_available() else torch.device("cpu")
        log.info("runtime.device=auto chose %s", dev)
        return dev
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(f"device {spec!r} asked for, but this machine has no CUDA device "
                                         f"(torch {torch.__version__}, built for CUDA: "
                                         f"{torch.version.cuda or 'no'}); use --device cpu or auto")
        index = _local_cuda_index() if spec == "cuda" else int(spec.split(":", 1)[1])
        if index >= torch.cuda.device_count():
            raise DeviceUnavailableError(f"device {spec!r} asked for, but this machine has "
                                         f"{torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    raise ValueError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N")


def resolve_dtype(spec: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(spec, torch.dtype):
        return spec
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if spec not in DTYPES:
        raise ValueError(f"unknown dtype {spec!r}: use auto, float32, float16 or bfloat16")
    return DTYPES[spec]
