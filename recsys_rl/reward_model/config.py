"""The reward model's settings: one validated config, each knob with its default and a one-line help."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RewardModelConfig(BaseModel):
    """Fitting the banner reward model on logged impressions (``recsys-rl train-reward-model``)."""

    model_config = ConfigDict(extra="forbid")

    embed_dim: int = Field(32, ge=1, description="width of context queries and product embeddings")
    hidden_dim: int = Field(128, ge=1, description="context encoder width")
    epochs: int = Field(30, ge=1, description="most passes over the training impressions")
    patience: int = Field(3, ge=1, description="stop after this many epochs without a better validation loss")
    batch_size: int = Field(1024, ge=1, description="impressions per gradient step")
    lr: float = Field(3e-3, gt=0, description="Adam learning rate")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    validation_share: float = Field(
        0.2, gt=0, lt=1, description="share of impressions held out for validation"
    )
    calibration_bins: int = Field(10, ge=2, description="equal-width bins of the calibration error and plot")
    seed: int = Field(0, description="seed of the split, initialisation and minibatch order")
