"""Plugins through entry points: discovery, the allow-list, failure isolation, and the model
contract (initializers, regularizers and shape checks reach a plugin's own layers)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from importlib.metadata import EntryPoint, PackageNotFoundError, distribution
from typing import Any

import pytest
import torch
from pydantic import BaseModel, ValidationError
from torch import nn

from tests.conftest import require
from trainer import plugins
from trainer.config import DatasetConfig, ModelConfig, TrialConfig
from trainer.lit_module import TrialModule
from trainer.models import ModelBuildError, build_network, kernel_layers
from trainer.spec_error import SpecError


def example_plugins_installed() -> bool:
    try:
        distribution("hpsearch-examples")
    except PackageNotFoundError:
        return False
    return True


@pytest.fixture
def examples() -> Iterator[None]:
    """The example plugin package, installed by `make install` (and so by .ci/run)."""
    require(
        example_plugins_installed(),
        "the example plugins are not installed (pip install -e examples/plugins)",
    )
    plugins.activate(None)
    yield
    plugins.activate(None)


@pytest.fixture
def fake_entry_points(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[EntryPoint]]:
    """Entry points this test declares, instead of the installed ones."""
    declared: list[EntryPoint] = []

    def entry_points(*, group: str) -> list[EntryPoint]:
        return [point for point in declared if point.group == group]

    monkeypatch.setattr(plugins, "entry_points", entry_points)
    yield declared
    monkeypatch.undo()
    plugins.activate(None, rescan=True)


# --- discovery and the allow-list -----------------------------------------------------------


def test_installed_example_plugins_are_registered_with_their_distribution(examples: None) -> None:
    by_name = {info.name: info for info in plugins.installed()}
    for name, kind in (("resmlp", "model"), ("diabetes", "dataset")):
        info = by_name[name]
        assert (info.kind, info.status, info.distribution) == (kind, "loaded", "hpsearch-examples")
        assert info.version == distribution("hpsearch-examples").version
    assert by_name["resmlp"].config_schema is not None
    assert "width" in by_name["resmlp"].config_schema["properties"]
    assert ModelConfig(type="resmlp").config == {
        "width": 64,
        "blocks": 2,
        "activation": "relu",
        "dropout": 0.0,
    }


def test_the_allow_list_leaves_other_plugins_out_and_says_why(examples: None) -> None:
    plugins.activate({"resmlp"})
    assert ModelConfig(type="resmlp").type == "resmlp"
    with pytest.raises(ValidationError) as error:
        DatasetConfig(name="diabetes")
    message = str(error.value)
    assert "unknown dataset 'diabetes'" in message
    assert "not in this server's plugin allow-list HPS_PLUGINS" in message
    assert "digits" in message  # the names that can be used are listed
    plugins.activate(set())
    with pytest.raises(ValidationError, match="unknown model 'resmlp'"):
        ModelConfig(type="resmlp")
    plugins.activate(None)
    assert DatasetConfig(name="diabetes").name == "diabetes"


def test_a_plugin_that_fails_to_import_is_logged_and_left_out(
    fake_entry_points: list[EntryPoint], caplog: pytest.LogCaptureFixture
) -> None:
    fake_entry_points += [
        EntryPoint("broken", "no_such_module_anywhere:build", "hpsearch.models"),
        EntryPoint("flat", "tests.test_plugins:build_flat_net", "hpsearch.models"),
        EntryPoint("mlp", "tests.test_plugins:build_flat_net", "hpsearch.models"),
    ]
    with caplog.at_level(logging.ERROR, logger="trainer.plugins"):
        infos = {info.name: info for info in plugins.activate(None, rescan=True)}
    assert infos["broken"].status == "failed"
    assert "ModuleNotFoundError" in (infos["broken"].error or "")
    assert "no_such_module_anywhere" in caplog.text  # the traceback is in the log
    assert infos["flat"].status == "loaded"  # the others still load
    assert infos["mlp"].status == "failed"  # a built-in's name cannot be taken over
    assert "already registered" in (infos["mlp"].error or "")
    with pytest.raises(ValidationError, match="its plugin failed to load: ModuleNotFoundError"):
        ModelConfig(type="broken")
    assert ModelConfig(type="mlp").builtin


# --- the model contract -----------------------------------------------------------------------


class TwoTowers(nn.Module):
    """A plugin model that lists its kernel layers: `frozen` is left out on purpose."""

    def __init__(self, features: int, n_outputs: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(features, 8)
        self.frozen = nn.Linear(features, 8)
        self.out = nn.Linear(8, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        output: torch.Tensor = self.out(torch.relu(self.hidden(x)) + self.frozen(x))
        return output

    def kernel_layers(self) -> list[nn.Module]:
        return [self.hidden, self.out]


def build_two_towers(input_shape: tuple[int, ...], n_outputs: int, **config: Any) -> nn.Module:
    return TwoTowers(int(torch.tensor(input_shape).prod()), n_outputs)


def build_flat_net(input_shape: tuple[int, ...], n_outputs: int, **config: Any) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), n_outputs))


def build_wrong_width(input_shape: tuple[int, ...], n_outputs: int, **config: Any) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), 3))


def build_raising(input_shape: tuple[int, ...], n_outputs: int, **config: Any) -> nn.Module:
    raise RuntimeError("the plugin's own bug")


class WidthConfig(BaseModel):
    width: int = 4


def build_with_schema(input_shape: tuple[int, ...], n_outputs: int, *, width: int) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(int(torch.tensor(input_shape).prod()), width),
        nn.ReLU(),
        nn.Linear(width, n_outputs),
    )


build_with_schema.config_schema = WidthConfig  # type: ignore[attr-defined]


@pytest.fixture
def test_models(fake_entry_points: list[EntryPoint]) -> None:
    for name in ("two_towers", "wrong_width", "raising", "with_schema"):
        fake_entry_points.append(
            EntryPoint(name, f"tests.test_plugins:build_{name}", "hpsearch.models")
        )
    plugins.activate(None, rescan=True)


def module_for(model: str, **config: Any) -> TrialModule:
    trial = TrialConfig(model=ModelConfig(type=model), **config)
    return TrialModule(trial.to_dict(), (12,), 4)


def test_initializers_reach_the_layers_a_plugin_lists_and_only_those(test_models: None) -> None:
    torch.manual_seed(0)
    network = module_for(
        "two_towers",
        kernel_initializer="ones",
        bias_initializer={"class_name": "constant", "config": {"value": 0.5}},
    ).network
    assert isinstance(network, TwoTowers)
    for layer in (network.hidden, network.out):
        assert torch.equal(layer.weight, torch.ones_like(layer.weight))
        assert torch.equal(layer.bias, torch.full_like(layer.bias, 0.5))
    assert not torch.equal(network.frozen.weight, torch.ones_like(network.frozen.weight))


def test_he_normal_variance_on_a_plugin_layer(test_models: None) -> None:
    fan_in = 12
    variances = []
    for seed in range(200):  # 8 x 12 weights per draw: average the variance over draws
        network = module_for(
            "two_towers", kernel_initializer={"class_name": "he_normal", "config": {"seed": seed}}
        ).network
        assert isinstance(network, TwoTowers)
        variances.append(float(network.hidden.weight.detach().double().var()))
    assert sum(variances) / len(variances) == pytest.approx(2.0 / fan_in, rel=0.05)


def test_kernel_and_bias_penalties_sum_over_the_plugin_layers(test_models: None) -> None:
    module = module_for(
        "two_towers",
        kernel_regularizer={"class_name": "l2", "config": {"l2": 0.01}},
        bias_regularizer={"class_name": "l1", "config": {"l1": 0.1}},
    )
    network = module.network
    assert isinstance(network, TwoTowers)
    layers = (network.hidden, network.out)
    with torch.no_grad():
        expected = sum(0.01 * float((layer.weight**2).sum()) for layer in layers)
        expected += sum(0.1 * float(layer.bias.abs().sum()) for layer in layers)
        penalty = module.penalty()
    assert penalty is not None
    assert float(penalty) == pytest.approx(expected, rel=1e-5)


def test_default_kernel_layers_are_every_linear_and_conv() -> None:
    network = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(4, 2), nn.ReLU())
    assert [type(layer) for layer in kernel_layers(network)] == [nn.Conv1d, nn.Linear]


def test_a_wrong_output_width_is_refused_before_training_saying_what_it_got(
    test_models: None,
) -> None:
    with pytest.raises(ModelBuildError) as error:
        build_network(ModelConfig(type="wrong_width"), (12,), 4)
    message = str(error.value)
    assert "returns outputs of shape (2, 3)" in message
    assert "expected (2, 4)" in message


def test_a_build_that_raises_is_a_build_error_with_its_message(test_models: None) -> None:
    with pytest.raises(
        ModelBuildError, match=r"failed to build .*RuntimeError: the plugin's own bug"
    ):
        build_network(ModelConfig(type="raising"), (12,), 4)


def test_a_plugin_config_is_validated_by_its_schema_at_its_json_path(test_models: None) -> None:
    assert ModelConfig(type="with_schema").config == {"width": 4}
    with pytest.raises(ValidationError) as error:
        ModelConfig(type="with_schema", config={"width": "wide"})
    cause = error.value.errors()[0]["ctx"]["error"]
    assert isinstance(cause, SpecError)
    assert cause.path == ("model", "config", "width")
    network = build_network(ModelConfig(type="with_schema", config={"width": 6}), (12,), 4)
    assert [layer.out_features for layer in kernel_layers(network)] == [6, 4]


def test_batch_norm_searched_for_a_plugin_that_has_no_such_setting_is_refused_at_its_path(
    examples: None,
) -> None:
    from trainer.template import TrialTemplate

    spec = {
        "model": {"type": "resmlp"},
        "search_space": {"batch_norm": {"type": "categorical", "choices": [False, True]}},
    }
    with pytest.raises(ValidationError) as caught:
        TrialTemplate.model_validate(spec)
    error = caught.value.errors()[0]["ctx"]["error"]
    assert isinstance(error, SpecError)
    assert error.path == ("search_space", "batch_norm")
    assert error.reason == "model 'resmlp': Extra inputs are not permitted"
