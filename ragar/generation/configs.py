"""The generator's settings (``autoencoder:``, ``generator:`` and ``generation:`` in a config file).

They live apart from the models they configure so that reading and validating a config imports
pydantic only: ``ragar.config`` (and so every ``ragar`` command, ``--help`` included) no longer
pulls in torch's and diffusers' import time to check a YAML file.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AutoencoderConfig(BaseModel):
    """Sizes and training of the autoencoder (``autoencoder:`` in a config file)."""

    model_config = ConfigDict(extra="forbid")
    image_size: int = Field(64, ge=16, le=256)
    # no residual block at full resolution: 0.35 s a training step at batch 32 on 2 cores against
    # 0.79 s with one block there (measured; the full-resolution level dominates the cost)
    channels: int = Field(32, ge=8, description="width of the encoder's blocks, and of the decoder's unless "
                          "decoder_channels says otherwise (AutoencoderTiny keeps one width per side)")
    encoder_blocks: list[int] = Field(default_factory=lambda: [0, 2], min_length=2,
                                      description="residual blocks per level; each level after the first halves")
    decoder_blocks: list[int] = Field(default_factory=lambda: [2, 0], min_length=2)
    # the decoder may be wider than the encoder: on the demo world a 64-wide decoder with 3 blocks,
    # trained on the shipped encoder's frozen latents, let NearID cos 0.851 of the perfect answer
    # through against 0.805 for the shipped 32-wide one (docs/GENERATION.md)
    decoder_channels: int | None = Field(None, ge=8, description="width of the decoder's blocks (default: "
                                         "channels)")
    latent_channels: int = Field(4, ge=1)
    batch_size: int = Field(32, ge=1)
    steps: int = Field(3000, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    seed: int = 0
    # a diffusion sample's latents are never exact: a decoder that saw only clean latents turns a
    # 0.1-std latent error into visible grain (measured), so it also learns from noisy ones
    decoder_noise: float = Field(0.0, ge=0, description="std (in scaled-latent units) of the noise added to the "
                                 "latents the decoder learns from, drawn uniformly up to this")
    # L1 + MSE alone let thin low-contrast parts go (dark table legs on a dark floor, a dark bag
    # handle: measured, the worst identity cos of reconstructions); 1 - SSIM normalises by local
    # contrast, so a faint leg costs as much as a bright one
    ssim_weight: float = Field(0.0, ge=0, description="weight of 1 - SSIM (torchmetrics, 7-px window) in the "
                               "reconstruction loss, beside L1 + MSE")
    init_from: str | None = Field(None, description="start from this trained autoencoder")
    freeze_encoder: bool = Field(False, description="train the decoder only: the latents (and any generator "
                                 "trained on them) stay valid; a decoder of another shape than init_from's "
                                 "starts from scratch on its encoder")

    @model_validator(mode="after")
    def _levels(self) -> AutoencoderConfig:
        if len(self.encoder_blocks) != len(self.decoder_blocks):
            raise ValueError("encoder_blocks and decoder_blocks must have one entry per level each")
        if self.image_size % self.downscale:
            raise ValueError(f"image_size {self.image_size} is not a multiple of the downscale {self.downscale}")
        return self

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.encoder_blocks) - 1)


class GeneratorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_size: int = Field(32, ge=8, le=256)
    reference_image: bool = Field(True, description="concatenate the reference image (or its latents) with the "
                                  "noisy sample, as InstructPix2Pix does")
    autoencoder: str | None = Field(None, description="a trained autoencoder directory (ragar train autoencoder): "
                                    "the UNet denoises its latents")
    block_out_channels: list[int] = Field(default_factory=lambda: [32, 64, 128, 128])
    # which resolution levels carry (self + cross) attention; attention at full resolution is the
    # most expensive part of a step on CPU (see benchmarks/generator_training_speed.py)
    cross_attention_blocks: list[bool] = Field(default_factory=lambda: [False, True, True, False])
    layers_per_block: int = Field(1, ge=1)
    cross_attention_dim: int = Field(128, ge=8)
    adapter_tokens: int = Field(4, ge=1)
    attention_head_dim: int = Field(8, ge=1)
    num_train_timesteps: int = Field(1000, ge=10)
    # what the UNet predicts. With the reference image as input, epsilon leaves x̂0 at high noise
    # nearly unconstrained (its loss scales x̂0's error by ᾱ/(1-ᾱ) ≈ 0.004 at t = 800): measured on
    # the first 64-px latent run, x̂0's MSE was 2.8 at t = 800 and the samples' colours were wrong.
    # v-prediction weighs x̂0 error evenly enough that high-noise steps copy the reference's layout.
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    steps: int = Field(2000, ge=1)
    drop_reference: float = Field(0.1, ge=0, le=1)
    drop_preference: float = Field(0.1, ge=0, le=1)
    ema_decay: float = Field(0.999, ge=0, lt=1)
    checkpoint_every: int = Field(500, ge=1)
    sample_every: int = Field(500, ge=1)
    mixed_precision: str = Field("no", pattern="^(no|fp16|bf16)$")
    gradient_accumulation_steps: int = Field(1, ge=1)
    seed: int = 0
    # the rank task (ragar.generation.rank_task): fine-tuning with the frozen ranker
    rank_task: bool = False
    rank_weight: float = Field(0.5, ge=0)
    rank_batch: int = Field(8, ge=2)
    rank_max_t: int = Field(400, ge=1, description="rank loss only where t < this (x̂0 is an image)")
    rank_consistency: float = Field(0.0, ge=0, description="weight of the consistency term: the MSE between "
                                    "x̂0 and what the starting weights predict from the same input")
    init_from: str | None = Field(None, description="start from this trained generator's weights (fine-tuning), or "
                                  "a training checkpoint's EMA weights (a checkpoint-N directory)")
    # style pairs (make_pairs): teach the adapter to read *how* an item looks from the preference
    style_pairs: float = Field(0.0, ge=0, le=1, description="share of pairs whose preference is same-style items")
    style_columns: list[str] = Field(default_factory=lambda: ["palette", "pattern", "finish"], min_length=1,
                                     description="catalog columns that together name an item's style")

    @model_validator(mode="after")
    def _blocks_match(self) -> GeneratorConfig:
        if len(self.cross_attention_blocks) != len(self.block_out_channels):
            raise ValueError(f"cross_attention_blocks has {len(self.cross_attention_blocks)} entries but "
                             f"block_out_channels has {len(self.block_out_channels)}")
        return self


MethodName = Literal["ragar", "uniform", "recency", "reference-only"]
#: the shipped generator's guidance scales (reference, preference), chosen with its weights
#: (docs/GENERATION.md); every config that samples from it, and RagarPipeline.__call__, default to them
GUIDANCE_SCALES = (3.0, 6.0)


class GenerationConfig(BaseModel):
    """Inference settings of the generator and of best-of-N (``generation:`` in a config file)."""

    model_config = ConfigDict(extra="forbid")
    method: MethodName = "ragar"
    n: int = Field(4, ge=1, description="candidates per request")
    max_n: int = Field(16, ge=1, description="the cap a request's n may not exceed")
    num_inference_steps: int = Field(25, ge=1, le=1000)
    reference_guidance_scale: float = Field(GUIDANCE_SCALES[0], ge=0)
    preference_guidance_scale: float = Field(GUIDANCE_SCALES[1], ge=0)
    tradeoff: float = Field(0.5, ge=0, le=1, description="best-of-N weight on preference fit (1 - on identity)")
    history_len: int = Field(100, ge=1)
