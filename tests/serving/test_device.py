"""The service's device settings: RAGAR_DEVICE / RAGAR_DTYPE, batching defaults per device, /metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from ragar.runtime import Runtime
from serving.batching import CPU_BATCHING, GPU_BATCHING
from serving.settings import ServingSettings
from tests.ragar.test_runtime import _tensors


def test_device_and_dtype_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("RAGAR_DEVICE", "cuda:1")
    monkeypatch.setenv("RAGAR_DTYPE", "bfloat16")
    s = ServingSettings()
    assert (s.device, s.dtype) == ("cuda:1", "bfloat16")
    monkeypatch.setenv("RAGAR_DEVICE", "gpu0")
    with pytest.raises(ValidationError, match="device"):
        ServingSettings()


def test_batching_defaults_follow_the_device_and_settings_win():
    s = ServingSettings()
    assert s.batching(on_gpu=False) == CPU_BATCHING
    assert s.batching(on_gpu=True) == GPU_BATCHING
    assert GPU_BATCHING[0] > CPU_BATCHING[0] and GPU_BATCHING[2] >= 256  # 256 clients queue, not 429
    s = ServingSettings(max_batch_size=3, max_wait_ms=0, queue_size=5)
    assert s.batching(on_gpu=True) == (3, 0.0, 5)


def test_the_service_batches_for_its_device(make_service):
    svc = make_service()
    assert svc.runtime.device.type == "cpu"
    size, wait_s, queue = CPU_BATCHING
    assert (svc.batcher.max_batch_size, svc.batcher.max_wait_s, svc.batcher.queue_size) == (size, wait_s, queue)


def test_metrics_name_the_device(make_service):
    text = make_service().metrics.exposition().decode()
    assert 'ragar_device_info{device="cpu",dtype="float32",name="cpu"} 1.0' in text
    assert "ragar_device_memory_bytes" not in text  # only on CUDA


def test_the_service_puts_an_arm_generator_on_its_device(make_service, tiny_models):
    import copy

    svc = make_service()
    svc.runtime = Runtime(torch.device("meta"))
    svc.settings = svc.settings.model_copy(update={"models": Path(tiny_models["generator"]).parent})
    svc._variants = {None: copy.copy(svc.personalizer)}
    arm = svc.variant("generator")
    found = [(n, t) for n, t in _tensors(arm.pipeline, "pipeline") if ".scheduler." not in n]
    assert {n.split(".")[1] for n, _ in found} == {"unet", "adapter"}
    assert {t.device.type for _, t in found} == {"meta"}
