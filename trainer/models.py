"""The networks: plain `nn.Module`s (the built-in MLP and CNN, or a plugin's), built from a
`ModelConfig` and checked; no training logic here."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from trainer import networks
from trainer.config import ModelConfig
from trainer.layers import BatchNormalization, Dropout
from trainer.networks import Activation, NetworkConfig

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


KERNEL_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
"""The layers that carry a kernel by default (Keras's Dense and ConvND)."""


class ModelBuildError(ValueError):
    """A model that cannot be built or does not fit the data; the message says what it got."""


def _hidden(layer: nn.Module, width: int, config: NetworkConfig) -> list[nn.Module]:
    """A hidden Linear/Conv layer, its BatchNormalization (when asked) and its activation."""
    normalization: list[nn.Module] = []
    if config.batch_norm:
        normalization.append(
            BatchNormalization(width, config.batch_norm_momentum, config.batch_norm_epsilon)
        )
    return [layer, *normalization, _ACTIVATIONS[config.activation]()]


def _dense_stack(
    in_features: int, hidden_units: tuple[int, ...], config: NetworkConfig
) -> tuple[list[nn.Module], int]:
    layers: list[nn.Module] = []
    for units in hidden_units:
        layers += _hidden(nn.Linear(in_features, units), units, config)
        if config.dropout > 0:
            layers.append(Dropout(config.dropout))
        in_features = units
    return layers, in_features


class _Builtin(nn.Sequential):
    def activity_layers(self) -> list[nn.Module]:
        """What Keras's hidden Dense/Conv layers return, for their activity regularizer: the
        output after the activation; with batch normalization (in Keras a Dense without
        activation, then BatchNormalization, then Activation) the layer's own linear output."""
        modules = list(self.children())
        watched: list[nn.Module] = []
        for position, module in enumerate(modules[:-1]):
            if not isinstance(module, nn.Linear | nn.Conv2d):
                continue
            following = modules[position + 1]
            watched.append(module if isinstance(following, BatchNormalization) else following)
        return watched


class MLP(_Builtin):
    """Linear → activation → Dropout per hidden layer, then Linear logits."""

    def __init__(self, in_features: int, n_classes: int, config: NetworkConfig) -> None:
        layers, width = _dense_stack(in_features, config.hidden_units, config)
        super().__init__(nn.Flatten(), *layers, nn.Linear(width, n_classes))


class CNN(_Builtin):
    """[Conv2d(same) → activation → MaxPool2d(2)] blocks, Dropout, then the MLP head."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, config: NetworkConfig) -> None:
        channels, height, width = input_shape
        layers: list[nn.Module] = []
        for out_channels in config.channels:
            convolution = nn.Conv2d(channels, out_channels, config.kernel_size, padding="same")
            layers += _hidden(convolution, out_channels, config)
            if min(height, width) >= 2:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            channels = out_channels
        layers.append(nn.Flatten())
        if config.dropout > 0:
            layers.append(Dropout(config.dropout))
        head, head_width = _dense_stack(channels * height * width, config.hidden_units, config)
        super().__init__(*layers, *head, nn.Linear(head_width, n_classes))


def build_network(config: ModelConfig, input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    """The model `config` names, built for `input_shape` and checked: its output for a batch of
    two samples must be `(2, n_outputs)`. Raises `ModelBuildError` saying what went wrong."""
    try:
        network = networks.builder(config.type)(tuple(input_shape), n_outputs, **config.config)
    except Exception as error:
        raise ModelBuildError(
            f"model {config.type!r} failed to build for inputs {tuple(input_shape)} and "
            f"{n_outputs} outputs: {type(error).__name__}: {error}"
        ) from error
    if not isinstance(network, nn.Module):
        raise ModelBuildError(
            f"model {config.type!r}: build returned {type(network).__name__}, not a torch.nn.Module"
        )
    _check_output_shape(network, config.type, tuple(input_shape), n_outputs)
    if not kernel_layers(network):
        raise ModelBuildError(
            f"model {config.type!r} has no kernel layer (Linear/Conv, or its kernel_layers()) "
            "for the initializers and regularizers to apply to"
        )
    return network


@torch.no_grad()
def _check_output_shape(
    network: nn.Module, name: str, input_shape: tuple[int, ...], n_outputs: int
) -> None:
    was_training = network.training
    network.eval()  # a BatchNorm layer must not learn from the probe
    try:
        output = network(torch.zeros((2, *input_shape)))
    except Exception as error:
        raise ModelBuildError(
            f"model {name!r} fails on a batch of inputs shaped {(2, *input_shape)}: "
            f"{type(error).__name__}: {error}"
        ) from error
    finally:
        network.train(was_training)
    shape = tuple(getattr(output, "shape", ()))
    if not isinstance(output, torch.Tensor) or shape != (2, n_outputs):
        raise ModelBuildError(
            f"model {name!r} returns outputs of shape {shape} for a batch of 2 inputs shaped "
            f"{input_shape}; expected (2, {n_outputs}) (n_outputs={n_outputs})"
        )


def kernel_layers(network: nn.Module) -> list[nn.Module]:
    """The layers whose `weight` and `bias` take the initializers and regularizers: the
    model's own `kernel_layers()` when it has one, else every Linear and ConvND layer."""
    own = getattr(network, "kernel_layers", None)
    if callable(own):
        return list(own())
    return [module for module in network.modules() if isinstance(module, KERNEL_LAYER_TYPES)]


def activity_layers(network: nn.Module) -> list[nn.Module]:
    """The modules whose outputs the activity regularizer penalizes: the model's own
    `activity_layers()`, else every kernel layer but the output layer."""
    own = getattr(network, "activity_layers", None)
    if callable(own):
        return list(own())
    return kernel_layers(network)[:-1]


@torch.no_grad()
def initialize(network: nn.Module, kernel: Initializer, bias: Initializer) -> None:
    """Overwrite every kernel and bias with the given Keras-style initializers."""
    for layer in kernel_layers(network):
        weight = getattr(layer, "weight", None)
        if isinstance(weight, torch.Tensor):
            weight.copy_(kernel(tuple(weight.shape), dtype=weight.dtype))
        layer_bias = getattr(layer, "bias", None)
        if isinstance(layer_bias, torch.Tensor):
            layer_bias.copy_(bias(tuple(layer_bias.shape), dtype=layer_bias.dtype))
