import importlib.util


def test_torchvision_is_absent():
    # installed beside torch 2.13 it fails to import and takes transformers and diffusers with it
    assert importlib.util.find_spec("torchvision") is None


def test_torch_is_the_pinned_cpu_build():
    import torch

    assert torch.__version__.startswith("2.13.0")


def test_transformers_and_diffusers_import():
    import diffusers  # noqa: F401
    import transformers  # noqa: F401
