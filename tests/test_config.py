"""`TrialConfig` and its parts: Keras defaults, JSON round trip, identifier normalization."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from trainer.config import (
    CheckpointConfig,
    DatasetConfig,
    DiagnosisConfig,
    EarlyStoppingConfig,
    ModelConfig,
    TrialConfig,
)

ADAM_DEFAULTS = {
    "learning_rate": 0.001,
    "beta_1": 0.9,
    "beta_2": 0.999,
    "epsilon": 1e-7,
    "amsgrad": False,
}


def build(cls: type[Any], data: dict[str, Any]) -> Any:
    """Validate `data` as `cls` the way a spec is read (no keyword typing in the way)."""
    return TypeAdapter(cls).validate_python(data)


def round_trip(config: TrialConfig) -> TrialConfig:
    return TrialConfig.from_dict(json.loads(json.dumps(config.to_dict())))


# --- defaults -------------------------------------------------------------------------------


def test_trial_config_defaults_are_keras_defaults() -> None:
    config = TrialConfig()
    assert config.kernel_initializer == {"class_name": "glorot_uniform", "config": {"seed": None}}
    assert config.bias_initializer == {"class_name": "zeros", "config": {}}
    assert config.optimizer == {"class_name": "adam", "config": ADAM_DEFAULTS}
    assert config.kernel_regularizer is None
    assert config.bias_regularizer is None
    assert config.activity_regularizer is None
    assert config.batch_size == 32
    assert config.objective == "val_data_loss"  # not Keras's: the loss without the penalty
    assert config.early_stopping is None
    assert config.checkpoint == CheckpointConfig()
    assert config.dataset == DatasetConfig()
    assert config.model == ModelConfig()
    assert config.diagnosis == DiagnosisConfig()


def test_default_identifiers_equal_the_same_identifiers_given_by_name() -> None:
    assert TrialConfig() == TrialConfig(
        optimizer="adam", kernel_initializer="glorot_uniform", bias_initializer="zeros"
    )


def test_early_stopping_defaults_are_keras_defaults() -> None:
    early = EarlyStoppingConfig()
    assert early.monitor == "val_loss"
    assert early.min_delta == 0.0
    assert early.patience == 0
    assert early.mode == "auto"
    assert early.baseline is None
    assert early.restore_best_weights is False
    assert early.start_from_epoch == 0


def test_checkpoint_defaults_are_keras_defaults() -> None:
    checkpoint = CheckpointConfig()
    assert checkpoint.monitor == "val_loss"
    assert checkpoint.save_best_only is False
    assert checkpoint.save_weights_only is False
    assert checkpoint.mode == "auto"
    assert checkpoint.save_freq == "epoch"
    assert checkpoint.initial_value_threshold is None


def test_dataset_and_model_defaults() -> None:
    dataset = DatasetConfig()
    assert (dataset.name, dataset.validation_split, dataset.test_split) == ("digits", 0.2, 0.2)
    assert dataset.standardize is True
    assert dataset.folds is None
    model = ModelConfig()
    assert model.type == "mlp"
    assert (model.config["hidden_units"], model.config["activation"]) == ((128, 128), "relu")
    assert model.config["dropout"] == 0.0
    assert model.config["kernel_size"] % 2 == 1


# --- JSON round trip ------------------------------------------------------------------------

CUSTOM = TrialConfig(
    dataset=DatasetConfig(
        name="csv",
        path="/data/iris.csv",
        target="species",
        validation_split=0.15,
        test_split=0.1,
        seed=4,
        standardize=False,
        folds=5,
    ),
    model=ModelConfig(
        type="cnn",
        hidden_units=(64,),
        activation="leaky_relu",
        dropout=0.3,
        channels=(8, 16, 32),
        kernel_size=5,
    ),
    optimizer={"class_name": "rmsprop", "config": {"learning_rate": 0.01, "centered": True}},
    kernel_initializer={"class_name": "VarianceScaling", "config": {"scale": 2.0, "seed": 3}},
    bias_initializer={"class_name": "constant", "config": {"value": 0.1}},
    kernel_regularizer="l1_l2",
    bias_regularizer={"class_name": "l2", "config": {"l2": 1e-4}},
    activity_regularizer={"class_name": "orthogonal", "config": {"factor": 0.1, "mode": "columns"}},
    batch_size=128,
    max_epochs=50,
    seed=9,
    objective="val_accuracy",
    early_stopping=EarlyStoppingConfig(
        monitor="val_accuracy", min_delta=0.001, patience=4, baseline=0.5, start_from_epoch=2
    ),
    checkpoint=CheckpointConfig(
        monitor="loss",
        save_best_only=True,
        save_weights_only=True,
        mode="min",
        save_freq=100,
        initial_value_threshold=2.5,
        resume_every_s=0.0,
    ),
    diagnosis=DiagnosisConfig(max_train_error=0.1, max_generalization_gap=0.02),
)


@pytest.mark.parametrize(
    "config",
    [TrialConfig(), CUSTOM, TrialConfig(optimizer="nesterov", kernel_initializer="orthogonal")],
    ids=["default", "custom", "nesterov-orthogonal"],
)
def test_json_round_trip_gives_an_equal_config(config: TrialConfig) -> None:
    data = config.to_dict()
    assert json.loads(json.dumps(data)) == data  # plain JSON types only
    again = round_trip(config)
    assert again == config
    assert again.to_dict() == data


def test_to_dict_writes_tuples_as_lists_and_identifiers_as_dicts() -> None:
    data = CUSTOM.to_dict()
    assert data["model"]["config"]["hidden_units"] == [64]
    assert data["model"]["config"]["channels"] == [8, 16, 32]
    assert data["kernel_regularizer"] == {"class_name": "l1_l2", "config": {"l1": 0.0, "l2": 0.0}}
    assert data["checkpoint"]["save_freq"] == 100


# --- identifiers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "given", "expected"),
    [
        (
            "optimizer",
            "sgd",
            {
                "class_name": "sgd",
                "config": {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False},
            },
        ),
        (
            "optimizer",
            "momentum",
            {"class_name": "momentum", "config": {"learning_rate": 0.01, "momentum": 0.9}},
        ),
        ("optimizer", "Adam", {"class_name": "adam", "config": ADAM_DEFAULTS}),
        (
            "optimizer",
            {"class_name": "adam", "config": {"learning_rate": 0.05}},
            {"class_name": "adam", "config": {**ADAM_DEFAULTS, "learning_rate": 0.05}},
        ),
        (
            "optimizer",
            {"class_name": "Adam", "config": {"beta_1": 0.8}, "module": "keras.optimizers"},
            {"class_name": "adam", "config": {**ADAM_DEFAULTS, "beta_1": 0.8}},
        ),
        (
            "kernel_initializer",
            "he_normal",
            {"class_name": "he_normal", "config": {"seed": None}},
        ),
        ("kernel_initializer", "HeNormal", {"class_name": "he_normal", "config": {"seed": None}}),
        (
            "kernel_initializer",
            "normal",
            {"class_name": "random_normal", "config": {"seed": None, "mean": 0.0, "stddev": 0.05}},
        ),
        (
            "kernel_initializer",
            {"class_name": "RandomUniform", "config": {"maxval": 0.2, "seed": 1}},
            {"class_name": "random_uniform", "config": {"seed": 1, "minval": -0.05, "maxval": 0.2}},
        ),
        ("bias_initializer", "ones", {"class_name": "ones", "config": {}}),
        (
            "bias_initializer",
            {"class_name": "Constant", "config": {"value": 0.5}},
            {"class_name": "constant", "config": {"value": 0.5}},
        ),
        ("kernel_regularizer", "l2", {"class_name": "l2", "config": {"l2": 0.01}}),
        ("kernel_regularizer", "L1", {"class_name": "l1", "config": {"l1": 0.01}}),
        ("kernel_regularizer", "l1l2", {"class_name": "l1_l2", "config": {"l1": 0.0, "l2": 0.0}}),
        (
            "bias_regularizer",
            {"class_name": "L1L2", "config": {"l1": 0.1}},
            {"class_name": "l1_l2", "config": {"l1": 0.1, "l2": 0.0}},
        ),
        ("activity_regularizer", "none", None),
        ("activity_regularizer", None, None),
    ],
)
def test_identifiers_normalize_to_class_name_and_config(
    field: str, given: Any, expected: dict[str, Any] | None
) -> None:
    config = TrialConfig.from_dict({field: given})
    assert getattr(config, field) == expected
    assert round_trip(config) == config


@pytest.mark.parametrize(
    ("field", "given", "message"),
    [
        ("optimizer", "adamx", "unknown optimizer 'adamx' (did you mean 'adam'?)"),
        ("optimizer", {"class_name": "lbfgs", "config": {}}, "unknown optimizer 'lbfgs'"),
        ("optimizer", {"class_name": "adam", "config": {"momentum": 0.9}}, "invalid config"),
        ("optimizer", {"class_name": "sgd", "config": {"learning_rate": 0}}, "learning_rate"),
        ("optimizer", {"config": {}}, "needs a 'class_name'"),
        ("optimizer", {"class_name": "adam", "extra": 1}, "unexpected keys"),
        ("kernel_initializer", "xavier", "unknown initializer 'xavier'"),
        ("kernel_regularizer", "l3", "unknown regularizer 'l3'"),
        ("kernel_regularizer", {"class_name": "l2", "config": {"l2": -1.0}}, "l2 must be"),
    ],
)
def test_bad_identifiers_are_rejected(field: str, given: Any, message: str) -> None:
    with pytest.raises(ValidationError) as error:
        TrialConfig.from_dict({field: given})
    text = str(error.value)
    assert field in text
    assert message in text


def test_unknown_optimizer_message_lists_known_optimizers() -> None:
    with pytest.raises(ValidationError) as error:
        TrialConfig(optimizer="adamx")
    assert "Known: adam, adamw, momentum, nesterov, rmsprop, sgd" in str(error.value)


@pytest.mark.parametrize(
    ("cls", "data", "message"),
    [
        (TrialConfig, {"objective": "val_f1"}, "objective must be one of"),
        (TrialConfig, {"batch_size": 0}, "batch_size"),
        (TrialConfig, {"learning_rate": 0.1}, "Unexpected keyword argument"),
        (DatasetConfig, {"name": "mnist"}, "name"),
        (DatasetConfig, {"validation_split": 0.0}, "validation_split"),
        (DatasetConfig, {"validation_split": 0.4, "test_split": 0.5}, "at least 20%"),
        (DatasetConfig, {"name": "npz"}, "dataset.config.path: dataset 'npz': Field required"),
        (
            DatasetConfig,
            {"name": "digits", "path": "x.csv"},
            "dataset.path: dataset 'digits': Extra",
        ),
        (DatasetConfig, {"folds": 1}, "folds"),
        (ModelConfig, {"hidden_units": [64, 0]}, "layer sizes must be between 1 and 65536"),
        (ModelConfig, {"type": "cnn", "channels": []}, "at least one entry in 'channels'"),
        (ModelConfig, {"activation": "swish"}, "activation"),
        (ModelConfig, {"dropout": 1.0}, "dropout"),
        (EarlyStoppingConfig, {"patience": -1}, "patience"),
        (EarlyStoppingConfig, {"monitor": "val_auc", "mode": "max"}, "monitor must be one of"),
        (CheckpointConfig, {"save_freq": -5}, "save_freq must be 'epoch' or a positive"),
        (CheckpointConfig, {"save_freq": "batch"}, "save_freq"),
        (DiagnosisConfig, {"max_train_error": 1.5}, "max_train_error"),
    ],
)
def test_invalid_parts_are_rejected(cls: type[Any], data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as error:
        build(cls, data)
    assert message in str(error.value)


# --- immutability ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "field", "value"),
    [
        (TrialConfig(), "batch_size", 64),
        (TrialConfig(), "optimizer", {"class_name": "sgd", "config": {}}),
        (DatasetConfig(), "seed", 1),
        (ModelConfig(), "type", "cnn"),
        (EarlyStoppingConfig(), "patience", 3),
        (CheckpointConfig(), "save_best_only", True),
        (DiagnosisConfig(), "max_train_error", 0.5),
    ],
)
def test_configs_are_frozen(config: Any, field: str, value: Any) -> None:
    before = getattr(config, field)
    with pytest.raises((dataclasses.FrozenInstanceError, ValidationError)):
        setattr(config, field, value)
    assert getattr(config, field) == before


def test_sub_configs_are_hashable_for_caching() -> None:
    assert hash(DatasetConfig(seed=1)) == hash(DatasetConfig(seed=1))
    assert len({ModelConfig(), ModelConfig(), ModelConfig(dropout=0.5)}) == 2
