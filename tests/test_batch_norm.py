"""Batch normalization in the built-in networks and as a searchable technique."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from trainer import TrialConfig, run_trial
from trainer.config import CheckpointConfig, DatasetConfig, ModelConfig
from trainer.data import load_splits
from trainer.layers import BatchNormalization
from trainer.lit_module import TrialModule
from trainer.models import activity_layers, build_network, kernel_layers
from trainer.spec_error import SpecError
from trainer.template import TrialTemplate

FLAT, IMAGE = (64,), (1, 8, 8)
DATA = DatasetConfig(name="synthetic", n_samples=300, n_features=8, n_classes=3)


def mlp(**config: Any) -> ModelConfig:
    return ModelConfig(type="mlp", config={"hidden_units": (32, 16), **config})


def modules(network: nn.Module) -> list[nn.Module]:
    assert isinstance(network, nn.Sequential)
    return list(network)


def test_mlp_normalizes_each_hidden_layer_between_its_linear_and_its_activation() -> None:
    network = build_network(mlp(batch_norm=True, dropout=0.2), FLAT, 10)
    layers = modules(network)
    norms = [i for i, m in enumerate(layers) if isinstance(m, BatchNormalization)]
    assert len(norms) == 2
    for i in norms:
        linear = layers[i - 1]
        assert isinstance(linear, nn.Linear)
        norm = layers[i]
        assert isinstance(norm, BatchNormalization)
        assert norm.features == linear.out_features
        assert isinstance(layers[i + 1], nn.ReLU)  # before the activation
        assert isinstance(layers[i + 2], nn.Dropout)  # dropout still follows the activation
        assert (norm.momentum, norm.epsilon) == (0.99, 1e-3)  # Keras's defaults
    assert isinstance(layers[-1], nn.Linear)  # the logits are not normalized


def test_cnn_normalizes_convolutions_per_channel_and_its_dense_head() -> None:
    config = ModelConfig(
        type="cnn", config={"channels": (4, 6), "hidden_units": (8,), "batch_norm": True}
    )
    layers = modules(build_network(config, IMAGE, 10))
    pairs = [
        (type(layers[i - 1]), m.features, type(layers[i + 1]))
        for i, m in enumerate(layers)
        if isinstance(m, BatchNormalization)
    ]
    assert pairs == [(nn.Conv2d, 4, nn.ReLU), (nn.Conv2d, 6, nn.ReLU), (nn.Linear, 8, nn.ReLU)]
    assert build_network(config, IMAGE, 10)(torch.randn(5, *IMAGE)).shape == (5, 10)


def test_no_normalization_unless_asked() -> None:
    for config in (mlp(), ModelConfig(type="cnn")):
        network = build_network(config, IMAGE, 10)
        assert not any(isinstance(m, BatchNormalization) for m in network.modules())


def test_momentum_and_epsilon_reach_every_layer() -> None:
    network = build_network(
        mlp(batch_norm=True, batch_norm_momentum=0.9, batch_norm_epsilon=1e-5), FLAT, 10
    )
    norms = [m for m in network.modules() if isinstance(m, BatchNormalization)]
    assert {(m.momentum, m.epsilon) for m in norms} == {(0.9, 1e-5)}


@pytest.mark.parametrize(
    "config", [{"batch_norm_momentum": 1.0}, {"batch_norm_epsilon": 0.0}, {"batch_norm": "maybe"}]
)
def test_out_of_range_normalization_settings_are_refused(config: dict[str, Any]) -> None:
    with pytest.raises((ValidationError, ValueError)):
        mlp(**{"batch_norm": True, **config})


def test_gamma_and_beta_are_neither_kernels_nor_regularized() -> None:
    reg = {"class_name": "l2", "config": {"l2": 0.1}}
    trial = TrialConfig(
        dataset=DATA,
        model=mlp(batch_norm=True),
        kernel_regularizer=reg,
        bias_regularizer=reg,
        kernel_initializer="ones",
        bias_initializer="ones",
    )
    data = load_splits(DATA)
    module = TrialModule(trial.to_dict(), data.input_shape, data.n_classes)
    norms = [m for m in module.network.modules() if isinstance(m, BatchNormalization)]
    assert norms
    assert not any(isinstance(layer, BatchNormalization) for layer in kernel_layers(module.network))
    for norm in norms:  # Keras's starting values, not the spec's initializers
        assert torch.equal(norm.weight, torch.ones_like(norm.weight))
        assert torch.equal(norm.bias, torch.zeros_like(norm.bias))
    with torch.no_grad():
        for norm in norms:  # a penalty on gamma/beta would now change
            norm.weight.fill_(5.0)
            norm.bias.fill_(-3.0)
    linears = [m for m in module.network.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        expected = sum(0.1 * float((m.weight**2).sum() + (m.bias**2).sum()) for m in linears)
    penalty = module.penalty()
    assert penalty is not None
    assert float(penalty.detach()) == pytest.approx(expected, rel=1e-5)


def test_activity_regularizer_watches_the_dense_output_before_normalization() -> None:
    # Keras: Dense (no activation) → BatchNormalization → Activation; the Dense's activity
    # regularizer sees the Dense's own output.
    network = build_network(mlp(batch_norm=True), FLAT, 10)
    watched = activity_layers(network)
    assert [type(m) for m in watched] == [nn.Linear, nn.Linear]
    assert [m.out_features for m in watched if isinstance(m, nn.Linear)] == [32, 16]
    plain = activity_layers(build_network(mlp(), FLAT, 10))
    assert [type(m) for m in plain] == [nn.ReLU, nn.ReLU]  # after the activation


def test_inference_uses_the_moving_statistics_so_rows_do_not_affect_each_other() -> None:
    network = build_network(mlp(batch_norm=True), FLAT, 10)
    network.train()
    network(torch.randn(64, 64) * 3 + 1)  # moves the statistics
    network.eval()
    rows = torch.randn(8, 64)
    torch.testing.assert_close(network(rows)[:1], network(rows[:1]))


def test_a_normalized_trial_learns_and_its_checkpoint_keeps_the_moving_statistics(
    tmp_path: Path,
) -> None:
    config = TrialConfig(
        dataset=DATA,
        model=mlp(batch_norm=True),
        max_epochs=5,
        checkpoint=CheckpointConfig(resume_every_s=0.0),
    )
    result = run_trial(config, checkpoint_dir=tmp_path)
    assert result.status == "completed"
    assert result.history[-1].loss < result.history[0].loss
    assert result.val is not None
    assert (result.val.accuracy or 0.0) > 0.6
    assert result.last_checkpoint is not None
    state = torch.load(result.last_checkpoint, map_location="cpu", weights_only=True)
    means = [k for k in state["state_dict"] if k.endswith("running_mean")]
    assert len(means) == 2
    for key in means:  # trained: moved away from Keras's starting zeros
        assert state["state_dict"][key].abs().sum() > 0


# --- the search space -----------------------------------------------------------------------


def space(**parameters: Any) -> dict[str, Any]:
    return {"model": {"type": "mlp", "hidden_units": [16]}, "search_space": parameters}


BATCH_NORM = {"type": "categorical", "choices": [False, True]}
MOMENTUM = {"type": "float", "low": 0.9, "high": 0.999}


def test_batch_norm_and_its_momentum_are_searchable() -> None:
    template = TrialTemplate.model_validate(
        space(
            batch_norm=BATCH_NORM, batch_norm_momentum={**MOMENTUM, "when": {"batch_norm": [True]}}
        )
    )
    config = template.config_for({"batch_norm": True, "batch_norm_momentum": 0.95}).model.config
    assert (config["batch_norm"], config["batch_norm_momentum"]) == (True, 0.95)
    assert template.config_for({"batch_norm": False}).model.config["batch_norm"] is False


def test_a_momentum_that_may_apply_to_no_normalization_is_refused_at_its_path() -> None:
    with pytest.raises(ValidationError) as caught:
        TrialTemplate.model_validate(space(batch_norm=BATCH_NORM, batch_norm_momentum=MOMENTUM))
    error = caught.value.errors()[0]["ctx"]["error"]
    assert isinstance(error, SpecError)
    assert error.path == ("search_space", "batch_norm_momentum")
    assert "applies only when batch_norm is true" in error.reason
    with pytest.raises(ValidationError, match="applies only when batch_norm is true"):
        TrialTemplate.model_validate(
            space(batch_norm_epsilon={"type": "float", "low": 1e-5, "high": 1e-2})
        )


def test_a_momentum_needs_no_condition_when_the_model_normalizes_anyway() -> None:
    fixed = TrialTemplate.model_validate(
        {**space(batch_norm_momentum=MOMENTUM), "fixed": {"batch_norm": True}}
    )
    assert fixed.config_for({"batch_norm_momentum": 0.9}).model.config["batch_norm"] is True
    in_model = TrialTemplate.model_validate(
        {
            "model": {"type": "mlp", "config": {"batch_norm": True}},
            "search_space": {"batch_norm_momentum": MOMENTUM},
        }
    )
    assert (
        in_model.config_for({"batch_norm_momentum": 0.9}).model.config["batch_norm_momentum"] == 0.9
    )
