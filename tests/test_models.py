"""The networks built from a `ModelConfig`: shapes, layer order, initialization, activations."""

from __future__ import annotations

from typing import Any, get_args

import pytest
import torch
from torch import nn

from trainer import initializers
from trainer.config import Activation, ModelConfig
from trainer.models import CNN, MLP, build_network, initialize
from trainer.models import kernel_layers as any_kernel_layers


def kernel_layers(network: nn.Module) -> list[nn.Linear | nn.Conv2d]:
    """The built-ins' kernel layers, typed (a plugin's may be any module with a weight)."""
    layers = any_kernel_layers(network)
    assert all(isinstance(layer, nn.Linear | nn.Conv2d) for layer in layers)
    return [layer for layer in layers if isinstance(layer, nn.Linear | nn.Conv2d)]


DIGITS_FLAT = (64,)
DIGITS_IMAGE = (1, 8, 8)

ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.ELU,
    nn.SELU,
    nn.GELU,
    nn.LeakyReLU,
    nn.SiLU,
    nn.Identity,
)


def layers(network: nn.Module) -> list[nn.Module]:
    assert isinstance(network, nn.Sequential)
    return list(network)


@pytest.mark.parametrize(
    ("config", "input_shape", "batch_shape"),
    [
        (ModelConfig(), DIGITS_FLAT, (5, 64)),
        (ModelConfig(hidden_units=()), DIGITS_FLAT, (5, 64)),
        (ModelConfig(hidden_units=(32, 16, 8), dropout=0.2), DIGITS_FLAT, (5, 64)),
        (ModelConfig(), DIGITS_IMAGE, (5, 1, 8, 8)),  # an MLP flattens image inputs
        (ModelConfig(type="cnn"), DIGITS_IMAGE, (5, 1, 8, 8)),
        (ModelConfig(type="cnn", kernel_size=5, dropout=0.5), DIGITS_IMAGE, (5, 1, 8, 8)),
        (
            ModelConfig(type="cnn", channels=(4, 4, 4, 4, 4), hidden_units=()),
            DIGITS_IMAGE,
            (5, 1, 8, 8),
        ),
        (ModelConfig(type="cnn", kernel_size=1), (3, 5, 7), (5, 3, 5, 7)),
    ],
)
def test_output_has_one_logit_per_class(
    config: ModelConfig, input_shape: tuple[int, ...], batch_shape: tuple[int, ...]
) -> None:
    network = build_network(config, input_shape, 10)
    assert isinstance(network, CNN if config.type == "cnn" else MLP)
    network.eval()
    out = network(torch.randn(batch_shape))
    assert out.shape == (5, 10)
    assert torch.isfinite(out).all()


def test_mlp_layer_widths_follow_hidden_units() -> None:
    network = build_network(ModelConfig(hidden_units=(32, 16)), DIGITS_FLAT, 10)
    linears = [layer for layer in layers(network) if isinstance(layer, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [
        (64, 32),
        (32, 16),
        (16, 10),
    ]


def test_cnn_pools_while_the_image_is_at_least_two_pixels_wide() -> None:
    network = build_network(ModelConfig(type="cnn", channels=(4, 5, 6, 7)), DIGITS_IMAGE, 10)
    modules = layers(network)
    convs = [m for m in modules if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 4), (4, 5), (5, 6), (6, 7)]
    assert all(c.padding == "same" for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in modules) == 3  # 8 → 4 → 2 → 1, then none
    first_linear = next(m for m in modules if isinstance(m, nn.Linear))
    assert first_linear.in_features == 7 * 1 * 1


@pytest.mark.parametrize("hidden_units", [(32,), (32, 16, 8)])
def test_mlp_dropout_follows_each_hidden_activation_only(hidden_units: tuple[int, ...]) -> None:
    network = build_network(ModelConfig(hidden_units=hidden_units, dropout=0.3), DIGITS_FLAT, 10)
    modules = layers(network)
    dropouts = [i for i, m in enumerate(modules) if isinstance(m, nn.Dropout)]
    assert len(dropouts) == len(hidden_units)
    for i in dropouts:
        dropout = modules[i]
        assert isinstance(dropout, nn.Dropout)
        assert dropout.p == 0.3
        assert isinstance(modules[i - 1], ACTIVATION_TYPES)  # after the activation
        assert isinstance(modules[i - 2], nn.Linear)
    first_linear = next(i for i, m in enumerate(modules) if isinstance(m, nn.Linear))
    assert not any(isinstance(m, nn.Dropout) for m in modules[:first_linear])  # not on inputs
    assert isinstance(modules[-1], nn.Linear)  # nothing after the output layer (logits)
    assert modules[-1].out_features == 10


def test_cnn_dropout_on_flattened_features_and_after_head_activations() -> None:
    network = build_network(
        ModelConfig(type="cnn", hidden_units=(32,), dropout=0.25), DIGITS_IMAGE, 10
    )
    modules = layers(network)
    dropouts = [i for i, m in enumerate(modules) if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 2
    assert isinstance(modules[dropouts[0] - 1], nn.Flatten)
    assert isinstance(modules[dropouts[1] - 1], ACTIVATION_TYPES)
    assert isinstance(modules[dropouts[1] - 2], nn.Linear)
    first_conv = next(i for i, m in enumerate(modules) if isinstance(m, nn.Conv2d))
    assert first_conv == 0  # no dropout on the input image
    assert isinstance(modules[-1], nn.Linear)


@pytest.mark.parametrize("model_type", ["mlp", "cnn"])
def test_no_dropout_modules_at_rate_zero(model_type: str) -> None:
    config = ModelConfig(type="cnn") if model_type == "cnn" else ModelConfig()
    network = build_network(config, DIGITS_IMAGE, 10)
    assert not any(isinstance(m, nn.Dropout) for m in network.modules())


def test_dropout_is_inactive_in_eval_mode() -> None:
    network = build_network(ModelConfig(dropout=0.9), DIGITS_FLAT, 10)
    network.eval()
    x = torch.randn(4, 64)
    torch.testing.assert_close(network(x), network(x))


@pytest.mark.parametrize("input_shape", [(64,), (8, 8), (1, 1, 8, 8)])
def test_cnn_needs_channels_height_width(input_shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"a CNN needs \(channels, height, width\) inputs"):
        build_network(ModelConfig(type="cnn"), input_shape, 10)


@pytest.mark.parametrize(
    ("config", "input_shape"),
    [(ModelConfig(hidden_units=(16, 8)), DIGITS_FLAT), (ModelConfig(type="cnn"), DIGITS_IMAGE)],
)
def test_initialize_applies_the_given_initializers(
    config: ModelConfig, input_shape: tuple[int, ...]
) -> None:
    network = build_network(config, input_shape, 10)
    initialize(network, initializers.get("ones"), initializers.get("zeros"))
    found = list(kernel_layers(network))
    layers = config.config
    expected = (
        3 if config.type == "mlp" else len(layers["channels"]) + len(layers["hidden_units"]) + 1
    )
    assert len(found) == expected
    for layer in found:
        assert torch.equal(layer.weight, torch.ones_like(layer.weight))
        assert layer.bias is not None
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))


def test_initialize_keeps_the_parameter_dtype() -> None:
    network = build_network(ModelConfig(hidden_units=(4,)), DIGITS_FLAT, 3).double()
    initialize(
        network,
        initializers.get("ones"),
        initializers.get({"class_name": "constant", "config": {"value": 0.5}}),
    )
    for layer in kernel_layers(network):
        assert layer.weight.dtype == torch.float64
        assert layer.bias is not None
        assert torch.equal(layer.bias, torch.full_like(layer.bias, 0.5))


def test_he_normal_kernel_variance_is_two_over_fan_in() -> None:
    fan_in = 1024
    network = build_network(ModelConfig(hidden_units=(1024,)), (fan_in,), 10)
    initialize(network, initializers.HeNormal(seed=0), initializers.get("zeros"))
    hidden = kernel_layers(network)[0]
    assert hidden.weight.shape == (1024, fan_in)
    weights = hidden.weight.detach().double()
    assert float(weights.mean()) == pytest.approx(0.0, abs=1e-3)
    assert float(weights.var()) == pytest.approx(2.0 / fan_in, rel=0.02)
    # Truncated at two (pre-truncation) standard deviations, as Keras does.
    limit = 2 * (2.0 / fan_in) ** 0.5 / 0.87962566103423978
    assert float(weights.abs().max()) <= limit + 1e-6


def test_initialize_overwrites_torch_default_initialization() -> None:
    torch.manual_seed(0)
    network = build_network(ModelConfig(hidden_units=(8,)), DIGITS_FLAT, 10)
    before = [layer.weight.clone() for layer in kernel_layers(network)]
    initialize(network, initializers.GlorotUniform(seed=1), initializers.get("zeros"))
    for layer, old in zip(kernel_layers(network), before, strict=True):
        assert not torch.equal(layer.weight, old)
        fan_in, fan_out = layer.weight.shape[1], layer.weight.shape[0]
        limit = (6.0 / (fan_in + fan_out)) ** 0.5
        assert float(layer.weight.detach().abs().max()) <= limit


def test_leaky_relu_uses_the_keras_slope() -> None:
    network = build_network(ModelConfig(activation="leaky_relu", hidden_units=(4,)), (2,), 2)
    (leaky,) = [m for m in network.modules() if isinstance(m, nn.LeakyReLU)]
    assert leaky.negative_slope == 0.2
    out = leaky(torch.tensor([-1.0, 0.0, 2.0]))
    torch.testing.assert_close(out, torch.tensor([-0.2, 0.0, 2.0]))


@pytest.mark.parametrize("activation", get_args(Activation))
def test_every_activation_builds_and_is_used_in_every_hidden_layer(
    activation: Activation,
) -> None:
    config = ModelConfig(activation=activation, hidden_units=(6, 6))
    network = build_network(config, (3,), 2)
    modules = layers(network)
    linears = [i for i, m in enumerate(modules) if isinstance(m, nn.Linear)]
    for i in linears[:-1]:
        assert isinstance(modules[i + 1], ACTIVATION_TYPES)
    kinds = {type(modules[i + 1]) for i in linears[:-1]}
    assert len(kinds) == 1
    out = network(torch.randn(4, 3))
    assert out.shape == (4, 2)


@pytest.mark.parametrize(
    ("activation", "module"),
    [("relu", nn.ReLU), ("tanh", nn.Tanh), ("gelu", nn.GELU), ("linear", nn.Identity)],
)
def test_activation_names_map_to_their_modules(
    activation: Activation, module: type[nn.Module]
) -> None:
    config = ModelConfig(activation=activation)
    network = build_network(config, (3,), 2)
    assert isinstance(layers(network)[2], module)


@pytest.mark.parametrize(
    ("model_type", "config", "shape"),
    [
        ("mlp", {"hidden_units": [128, 128]}, (64,)),
        ("mlp", {"hidden_units": [32], "batch_norm": True}, (1, 8, 8)),
        ("mlp", {"hidden_units": []}, (5,)),
        ("cnn", {}, (1, 8, 8)),
        ("cnn", {"channels": [4, 8, 16], "kernel_size": 5, "batch_norm": True}, (3, 9, 7)),
    ],
)
def test_parameter_count_is_the_built_networks(
    model_type: str, config: dict[str, Any], shape: tuple[int, ...]
) -> None:
    """The API's size check counts without building; it must count what the trainer builds."""
    from trainer.networks import parameter_count

    model = ModelConfig(type=model_type, config=config)
    network = build_network(model, shape, 7)
    built = sum(parameter.numel() for parameter in network.parameters())
    assert parameter_count(model_type, model.config, shape, 7) == built
