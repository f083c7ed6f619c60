"""A residual MLP: the model plugin contract, `build(input_shape, n_outputs, **config)`."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class ResMLPConfig(BaseModel):
    """What a spec's `model.config` may hold; validated at submit (422 with the JSON path)."""

    model_config = ConfigDict(extra="forbid")

    width: int = Field(default=64, ge=1, le=4096, description="units of every block")
    blocks: int = Field(default=2, ge=0, le=32, description="residual blocks")
    activation: Literal["relu", "tanh", "gelu"] = "relu"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="inside each block")


_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


class ResidualBlock(nn.Module):
    """x + Linear(act(Linear(x))), with dropout after the first activation."""

    def __init__(self, width: int, activation: str, dropout: float) -> None:
        super().__init__()
        self.inner = nn.Linear(width, width)
        self.outer = nn.Linear(width, width)
        self.activation = _ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.activation(self.inner(x)))
        return x + self.activation(self.outer(h))


class ResMLP(nn.Module):
    def __init__(self, in_features: int, n_outputs: int, config: ResMLPConfig) -> None:
        super().__init__()
        self.stem = nn.Linear(in_features, config.width)
        self.activation = _ACTIVATIONS[config.activation]()
        self.blocks = nn.Sequential(
            *(
                ResidualBlock(config.width, config.activation, config.dropout)
                for _ in range(config.blocks)
            )
        )
        self.head = nn.Linear(config.width, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.activation(self.stem(x.flatten(1)))))

    def kernel_layers(self) -> list[nn.Module]:
        """The layers hpsearch initializes and regularizes (here: every Linear, as the
        default would find; a model lists them to leave some out, e.g. an embedding)."""
        return [
            self.stem,
            *(m for m in self.blocks.modules() if isinstance(m, nn.Linear)),
            self.head,
        ]


def build_resmlp(input_shape: tuple[int, ...], n_outputs: int, **config: object) -> nn.Module:
    """Residual MLP: Linear stem, `blocks` residual blocks of `width` units, Linear head."""
    features = 1
    for size in input_shape:
        features *= size
    return ResMLP(features, n_outputs, ResMLPConfig.model_validate(config))


build_resmlp.config_schema = ResMLPConfig  # type: ignore[attr-defined]
