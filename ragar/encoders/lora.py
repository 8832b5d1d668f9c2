"""Personalized image encoders (seed paper 004): a LoRA (peft) on the image encoder, trained with
infoNCE so that one identity's images sit together and everything else, hard look-alikes first,
sits apart.

The encoder is the product's EfficientNet-Lite0. LoRA goes on the 1x1 expand/project convolutions
of the last blocks (``first_block`` on) and on the head convolution: those carry the object-level
features an identity is read from, while the early blocks (edges, textures) stay as ImageNet made
them. Because everything before ``first_block`` is frozen and LoRA-free, its output is computed
once per training image and only the adapted tail runs forward and backward each step: the same
gradients as running the whole network, at a fraction of the cost (a test checks the tail on cached
features equals the full encoder).

Saved like a Hugging Face adapter: peft's ``adapter_config.json`` + ``adapter_model.safetensors``
and a ``personalized.json`` (base encoder, image size, what it was trained on); loaded by the
registry as ``personalized:<dir>`` wherever an image encoder spec is accepted (the identity
metrics of ``ragar eval`` included). Nothing is unpickled.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ragar.encoders.base import ImageLike, fingerprint
from ragar.encoders.configs import LoraTrainingConfig
from ragar.encoders.efficientnet import EfficientNetLiteEncoder

CONFIG_NAME = "personalized.json"


@dataclass
class PersonalizedInfo:
    """What ``personalized.json`` holds beside the adapter."""

    base: str = "efficientnet-lite0"
    image_size: int = 128
    first_block: int = 15
    name: str = "personalized"
    training: dict = field(default_factory=dict)


def _target_modules(first_block: int) -> list[str]:
    # block 0 has no expand conv (expansion ratio 1)
    blocks = [f"_blocks.{i}._{k}_conv" for i in range(first_block, 16) for k in ("expand", "project")
              if (i, k) != (0, "expand")]
    return [*blocks, "_conv_head"]


def plain_pointwise(model: nn.Module, names: Sequence[str]) -> nn.Module:
    """Swap the named 1x1 ``Conv2dStaticSamePadding`` layers for plain ``nn.Conv2d`` with the same
    weights (a 1x1, stride-1 conv pads nothing, so the output is identical): peft builds its LoRA
    convs as ``type(base_layer)(...)``, which this subclass cannot be built as."""
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, attr)
        if old.kernel_size != (1, 1) or old.stride != (1, 1):
            raise ValueError(f"{name} is not a 1x1 stride-1 convolution")
        new = nn.Conv2d(old.in_channels, old.out_channels, 1, bias=old.bias is not None)
        new.load_state_dict(old.state_dict(), strict=True)
        setattr(parent, attr, new.requires_grad_(False))
    return model


def base_model() -> nn.Module:
    """A fresh EfficientNet-Lite0 (never the registry's shared one: peft edits modules in place)
    with the LoRA targets made plain convolutions for every ``first_block`` (all of them)."""
    from ragar.encoders.efficientnet import load_efficientnet_lite0

    return plain_pointwise(load_efficientnet_lite0(), _target_modules(0))


def lora_model(config: LoraTrainingConfig) -> nn.Module:
    """The base encoder with untrained LoRA layers (B = 0, so it starts as the base exactly)."""
    from peft import LoraConfig, get_peft_model

    base = base_model()
    cfg = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                     target_modules=_target_modules(config.first_block), bias="none")
    model = get_peft_model(base, cfg)
    model.eval()  # BatchNorm keeps ImageNet statistics; only LoRA weights train
    return model


def _core(model: nn.Module) -> nn.Module:
    """The EfficientNet inside a peft wrapper (or the model itself)."""
    inner = getattr(getattr(model, "base_model", None), "model", None)
    return inner if inner is not None else model


def prefix_features(model: nn.Module, x: torch.Tensor, first_block: int) -> torch.Tensor:
    """Stem and blocks before ``first_block``: the frozen, LoRA-free part."""
    m = _core(model)
    h = m._swish(m._bn0(m._conv_stem(x)))
    for block in m._blocks[:first_block]:
        h = block(h)
    return h


def tail_embedding(model: nn.Module, h: torch.Tensor, first_block: int) -> torch.Tensor:
    """The adapted blocks and head on prefix features -> unit embeddings (B, 1280)."""
    m = _core(model)
    for block in m._blocks[first_block:]:
        h = block(h)
    h = m._swish(m._bn1(m._conv_head(h)))
    return nn.functional.normalize(h.mean(dim=(2, 3)), dim=-1)


@torch.no_grad()
def cached_prefix(model: nn.Module, images: Sequence[ImageLike], config: LoraTrainingConfig,
                  batch_size: int = 64) -> torch.Tensor:
    """Prefix features of ``images`` at the config's size (computed once per training image)."""
    from ragar.encoders.base import to_batch
    from ragar.encoders.efficientnet import MEAN, STD

    out = [prefix_features(model, to_batch(images[i:i + batch_size], config.image_size, MEAN, STD),
                           config.first_block) for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros(0)


def hard_negative_order(negatives: torch.Tensor, reals: torch.Tensor) -> np.ndarray:
    """Negative rows, hardest first: by cosine to the mean of the real images' embeddings."""
    return np.argsort(-(negatives @ reals.mean(0)).numpy(), kind="stable")


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, temperature: float
             ) -> torch.Tensor:
    """Anchors (B, D) against their positive (B, D) and shared negatives (M, D): cross-entropy
    with the positive at index 0 (InfoNCE, van den Oord et al.)."""
    logits = torch.cat([(anchor * positive).sum(-1, keepdim=True), anchor @ negatives.T], 1) / temperature
    return nn.functional.cross_entropy(logits, torch.zeros(len(anchor), dtype=torch.long))


def train_lora(anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
               config: LoraTrainingConfig, hard_order: np.ndarray | None = None, model: nn.Module | None = None,
               progress: bool = False, device: torch.device | str = "cpu") -> tuple[nn.Module, list[float]]:
    """Train LoRA on cached prefix features: ``anchors`` (real images, augmented), ``positives``
    (anything showing the identity: the anchors themselves, pastes, generated renders) and
    ``negatives`` (N, C, h, w). Each step pairs ``anchors_per_step`` anchors with a random positive
    each and scores them against ``negatives_per_step`` negatives, part of them from the hardest
    (``hard_order``: negative rows, hardest first, e.g. by base-encoder similarity)."""
    from tqdm.auto import tqdm

    if len(anchors) == 0 or len(positives) == 0 or len(negatives) == 0:
        raise ValueError("LoRA training needs anchors, positives and negatives (got "
                         f"{len(anchors)}, {len(positives)}, {len(negatives)})")
    torch.manual_seed(config.seed)
    model = (model if model is not None else lora_model(config)).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.steps)
    g = np.random.default_rng(config.seed)
    hard = hard_order[: max(1, len(hard_order) // 4)] if hard_order is not None and len(hard_order) else None
    losses = []
    for _ in tqdm(range(config.steps), desc="LoRA infoNCE", disable=not progress):
        a = g.integers(len(anchors), size=config.anchors_per_step)
        p = g.integers(len(positives), size=config.anchors_per_step)
        m = min(config.negatives_per_step, len(negatives))
        n_hard = round(m * config.hard_negative_share) if hard is not None else 0
        neg = g.choice(len(negatives), size=m - n_hard, replace=False)
        if n_hard:
            neg = np.concatenate([neg, g.choice(hard, size=min(n_hard, len(hard)), replace=False)])
        x = torch.cat([anchors[a], positives[p], negatives[neg]]).float().to(device)
        emb = tail_embedding(model, x, config.first_block)
        b = config.anchors_per_step
        loss = info_nce(emb[:b], emb[b:2 * b], emb[2 * b:], config.temperature)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return model.cpu(), losses


def save_personalized(model: nn.Module, out: str | Path, info: PersonalizedInfo) -> Path:
    """peft adapter files + ``personalized.json`` under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    (out / CONFIG_NAME).write_text(json.dumps(asdict(info), indent=2, default=str))
    return out


class PersonalizedEncoder(EfficientNetLiteEncoder):
    """``personalized:<dir>``: the base encoder with the identity's LoRA merged in (its
    preprocessing and pooling are the base encoder's; only the weights differ)."""

    def __init__(self, path: str | Path):  # not super().__init__(): that would load a second model
        from peft import PeftModel

        path = Path(path)
        cfg_file = path / CONFIG_NAME
        if not cfg_file.exists() or not (path / "adapter_config.json").exists():
            raise FileNotFoundError(f"{path} holds no personalized encoder (expected {CONFIG_NAME} and a peft "
                                    "adapter: adapter_config.json, adapter_model.safetensors)")
        raw = json.loads(cfg_file.read_text())
        unknown = set(raw) - {f for f in PersonalizedInfo.__dataclass_fields__}
        if unknown:
            raise ValueError(f"{cfg_file}: unknown keys {sorted(unknown)}")
        self.info = PersonalizedInfo(**raw)
        if self.info.base != "efficientnet-lite0":
            raise ValueError(f"{cfg_file}: base encoder {self.info.base!r} is not supported (efficientnet-lite0)")
        peft_model = PeftModel.from_pretrained(base_model(), str(path))
        lora_state = {k: v for k, v in peft_model.state_dict().items() if "lora_" in k}
        self.model = peft_model.merge_and_unload().eval().requires_grad_(False)
        self.image_size = self.info.image_size
        self.name = f"personalized:{path.name}"
        self._fp = fingerprint(self.name, {"image_size": self.image_size, "base": self.info.base}, lora_state)
