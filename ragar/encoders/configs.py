"""The personalized encoder's settings (``personalize_encoder:`` in a config file), apart from the
torch code that trains it so that validating a config imports pydantic only."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ragar.generation.configs import GUIDANCE_SCALES


class LoraTrainingConfig(BaseModel):
    """LoRA shape and the infoNCE recipe (``personalize_encoder.lora`` in a config file)."""

    model_config = ConfigDict(extra="forbid")
    rank: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    first_block: int = Field(15, ge=0, le=16, description="LoRA on EfficientNet-Lite0 blocks >= this (of 16) "
                             "and on the head conv")
    image_size: int = Field(128, ge=64, le=512, description="input side; below 64 px EfficientNet-Lite0 "
                            "returns all-zero features for some images")
    steps: int = Field(30, ge=1)
    anchors_per_step: int = Field(32, ge=1, description="real images (augmented) per step, one positive each")
    negatives_per_step: int = Field(96, ge=1, description="negatives shared by the step's anchors")
    hard_negative_share: float = Field(0.5, ge=0, le=1, description="of the negatives, drawn from the hardest "
                                       "quarter under the base encoder")
    lr: float = Field(5e-4, gt=0)
    temperature: float = Field(0.07, gt=0)
    seed: int = 0


class SyntheticDataConfig(BaseModel):
    """How much of each kind of training image to make (``personalize_encoder.data``)."""

    model_config = ConfigDict(extra="forbid")
    augmentations: int = Field(24, ge=0, description="geometric augmentations of the real images")
    pastes: int = Field(48, ge=0, description="paste-on-background positives")
    generated_positives: int = Field(48, ge=0)
    generated_negatives: int = Field(48, ge=0)
    neighbours: int = Field(32, ge=1, description="nearest catalog items the generator borrows styles and "
                            "look-alike objects from")
    num_inference_steps: int = Field(15, ge=1, le=1000)
    reference_guidance_scale: float = Field(GUIDANCE_SCALES[0], ge=0)
    preference_guidance_scale: float = Field(GUIDANCE_SCALES[1], ge=0)
    seed: int = 0


class PersonalizeEncoderConfig(BaseModel):
    """``personalize_encoder:`` in a config file."""

    model_config = ConfigDict(extra="forbid")
    lora: LoraTrainingConfig = Field(default_factory=LoraTrainingConfig)
    data: SyntheticDataConfig = Field(default_factory=SyntheticDataConfig)
