"""The model registry: name → `ModelBuilder`, with the built-in `mlp` and `cnn` registered.

Plugins join it from the `hpsearch.models` entry-point group (`trainer.plugins`). Importing
this module does not import torch: the API validates specs with it, and a builder imports torch
only when it builds.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trainer._registry import Registry
from trainer.contracts import InputKind, ModelBuilder

if TYPE_CHECKING:
    from torch import nn

Activation = Literal[
    "relu", "tanh", "sigmoid", "elu", "selu", "gelu", "leaky_relu", "silu", "linear"
]

registry: Registry[ModelBuilder] = Registry("model")
BUILTIN = ("mlp", "cnn")
"""Models whose config also takes the search space's shape parameters (units, n_layers, ...)."""


class NetworkConfig(BaseModel):
    """The built-in networks' config (one schema for both: a spec may switch `type`).

    MLP: Linear → activation → Dropout for each hidden layer, then a Linear output layer.
    CNN: [Conv2d(same padding) → activation → MaxPool2d(2)] per channel count (pooling only
    while the image is at least 2 pixels wide), flatten, Dropout, then the MLP head above on
    `hidden_units`. Dropout is never applied to the inputs or to the logits. With
    `batch_norm`, a Keras `BatchNormalization(batch_norm_momentum, batch_norm_epsilon)` sits
    after each hidden Linear/Conv and before its activation (never after the output layer).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    hidden_units: tuple[int, ...] = (128, 128)
    activation: Activation = "relu"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    channels: tuple[int, ...] = Field(default=(16, 32), description="CNN only")
    kernel_size: int = Field(default=3, ge=1, le=15, description="CNN only (odd)")
    batch_norm: bool = False
    batch_norm_momentum: float = Field(
        default=0.99, ge=0.0, lt=1.0, description="Keras's: the share of the old statistics kept"
    )
    batch_norm_epsilon: float = Field(default=1e-3, gt=0.0, le=1.0)

    @field_validator("hidden_units", "channels")
    @classmethod
    def _positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(v < 1 or v > 65_536 for v in value):
            raise ValueError("layer sizes must be between 1 and 65536")
        return value

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same padding), got {value}")
        return value


class CNNConfig(NetworkConfig):
    @field_validator("channels")
    @classmethod
    def _some_channels(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value:
            raise ValueError("a CNN needs at least one entry in 'channels'")
        return value


def _mlp(input_shape: tuple[int, ...], n_outputs: int, **config: Any) -> nn.Module:
    from trainer.models import MLP

    features = 1
    for size in input_shape:
        features *= size
    return MLP(features, n_outputs, NetworkConfig(**config))


def _cnn(input_shape: tuple[int, ...], n_outputs: int, **config: Any) -> nn.Module:
    from trainer.models import CNN

    if len(input_shape) != 3:
        raise ValueError(f"a CNN needs (channels, height, width) inputs, got {input_shape}")
    return CNN(input_shape, n_outputs, CNNConfig(**config))


for _name, _builder, _kind, _schema in (
    ("mlp", _mlp, "flat", NetworkConfig),
    ("cnn", _cnn, "image", CNNConfig),
):
    _builder.config_schema = _schema  # type: ignore[attr-defined]
    _builder.input_kind = _kind  # type: ignore[attr-defined]
    registry.register(_name)(_builder)


def builder(name: str) -> ModelBuilder:
    """The registered builder (raises `UnknownIdentifierError` listing the known names)."""
    return registry.entry(name)


def input_kind(name: str) -> InputKind:
    kind: InputKind = getattr(builder(name), "input_kind", "flat")
    return kind


def validated_config(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """`config` checked by the model's `config_schema` (and filled with its defaults).

    Raises pydantic's `ValidationError` from the schema; a model without a schema takes any
    JSON-serializable config as is.
    """
    return validate_with_schema(builder(name), config)


def validate_with_schema(target: Any, config: dict[str, Any]) -> dict[str, Any]:
    """The shared rule of models and datasets: a plugin's `config_schema` validates and fills
    its config; without one the config passes as given."""
    schema = getattr(target, "config_schema", None)
    if schema is None:
        return dict(config)
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise TypeError(f"config_schema of {target!r} must be a pydantic model class")
    validated: dict[str, Any] = schema.model_validate(config).model_dump(mode="python")
    return validated


def config_json_schema(target: Any) -> dict[str, Any] | None:
    schema = getattr(target, "config_schema", None)
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        json_schema: dict[str, Any] = schema.model_json_schema()
        return json_schema
    return None


__all__ = [
    "BUILTIN",
    "Activation",
    "NetworkConfig",
    "ValidationError",
    "builder",
    "config_json_schema",
    "input_kind",
    "registry",
    "validate_with_schema",
    "validated_config",
]


def parameter_count(
    model_type: str, config: dict[str, Any], input_shape: tuple[int, ...], n_outputs: int
) -> int | None:
    """The trainable parameters of a built-in network (`trainer.models`) for these inputs
    and outputs, by arithmetic, without building it (the API checks a spec's size with it,
    and imports no torch); None for a plugin's model, whose size is known once built."""
    if model_type not in ("mlp", "cnn"):
        return None
    network = NetworkConfig.model_validate(config)
    normalization = 2 if network.batch_norm else 0  # γ and β per unit (moving stats: buffers)
    count = 0
    if model_type == "cnn":
        channels, height, width = (*(1,) * (3 - len(input_shape)), *input_shape)[-3:]
        for out_channels in network.channels:
            kernel = network.kernel_size * network.kernel_size
            count += channels * out_channels * kernel + out_channels
            count += normalization * out_channels
            if min(height, width) >= 2:
                height, width = height // 2, width // 2
            channels = out_channels
        features = channels * height * width
    else:
        features = math.prod(input_shape)
    for units in network.hidden_units:
        count += features * units + units + normalization * units
        features = units
    return count + features * n_outputs + n_outputs
