"""The networks: plain `nn.Module`s built from a `ModelConfig`; no training logic here."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from trainer.config import Activation, ModelConfig

_ACTIVATIONS: dict[Activation, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),  # Keras's default negative_slope is 0.2
    "silu": nn.SiLU,
    "linear": nn.Identity,
}

Initializer = Callable[..., torch.Tensor]


def _dense_stack(
    in_features: int, hidden_units: tuple[int, ...], config: ModelConfig
) -> tuple[list[nn.Module], int]:
    layers: list[nn.Module] = []
    for units in hidden_units:
        layers += [nn.Linear(in_features, units), _ACTIVATIONS[config.activation]()]
        if config.dropout > 0:
            layers.append(nn.Dropout(config.dropout))
        in_features = units
    return layers, in_features


class MLP(nn.Sequential):
    """Linear → activation → Dropout per hidden layer, then Linear logits."""

    def __init__(self, in_features: int, n_classes: int, config: ModelConfig) -> None:
        layers, width = _dense_stack(in_features, config.hidden_units, config)
        super().__init__(nn.Flatten(), *layers, nn.Linear(width, n_classes))


class CNN(nn.Sequential):
    """[Conv2d(same) → activation → MaxPool2d(2)] blocks, Dropout, then the MLP head."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, config: ModelConfig) -> None:
        channels, height, width = input_shape
        layers: list[nn.Module] = []
        for out_channels in config.channels:
            layers += [
                nn.Conv2d(channels, out_channels, config.kernel_size, padding="same"),
                _ACTIVATIONS[config.activation](),
            ]
            if min(height, width) >= 2:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            channels = out_channels
        layers.append(nn.Flatten())
        if config.dropout > 0:
            layers.append(nn.Dropout(config.dropout))
        head, head_width = _dense_stack(channels * height * width, config.hidden_units, config)
        super().__init__(*layers, *head, nn.Linear(head_width, n_classes))


def build_network(config: ModelConfig, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    if config.type == "cnn":
        if len(input_shape) != 3:
            raise ValueError(f"a CNN needs (channels, height, width) inputs, got {input_shape}")
        return CNN(input_shape, n_classes, config)
    features = 1
    for size in input_shape:
        features *= size
    return MLP(features, n_classes, config)


def weight_layers(network: nn.Module) -> Iterator[nn.Linear | nn.Conv2d]:
    """The layers that carry a kernel (Keras's Dense and Conv2D)."""
    for module in network.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            yield module


@torch.no_grad()
def initialize(network: nn.Module, kernel: Initializer, bias: Initializer) -> None:
    """Overwrite every kernel and bias with the given Keras-style initializers."""
    for layer in weight_layers(network):
        layer.weight.copy_(kernel(tuple(layer.weight.shape), dtype=layer.weight.dtype))
        if layer.bias is not None:
            layer.bias.copy_(bias(tuple(layer.bias.shape), dtype=layer.bias.dtype))
