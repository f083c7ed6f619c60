"""`TrialTemplate`: spec validation on construction, and sampled values → `TrialConfig`."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from trainer import initializers, optimizers, regularizers
from trainer.config import EarlyStoppingConfig, TrialConfig
from trainer.spec_error import SpecError
from trainer.template import PARAMETERS, TrialTemplate

EXAMPLE: dict[str, Any] = {
    "search_space": {
        "initializer": {
            "type": "categorical",
            "choices": ["glorot_uniform", "he_normal", "random_normal", "orthogonal"],
        },
        "optimizer": {"type": "categorical", "choices": ["sgd", "momentum", "rmsprop", "adam"]},
        "momentum": {
            "type": "float",
            "low": 0.5,
            "high": 0.99,
            "when": {"optimizer": ["momentum"]},
        },
        "learning_rate": {"type": "float", "low": 0.0001, "high": 0.1, "log": True},
        "regularizer": {"type": "categorical", "choices": ["none", "l1", "l2", "l1_l2"]},
        "lambda": {
            "type": "float",
            "low": 1e-6,
            "high": 0.01,
            "log": True,
            "when": {"regularizer": ["l1", "l2", "l1_l2"]},
        },
        "dropout": {"type": "float", "low": 0.0, "high": 0.5},
        "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
    },
    "fixed": {"bias_initializer": "zeros"},
    "early_stopping": {"patience": 3, "restore_best_weights": True},
    "checkpoint": {"save_best_only": True},
}

SAMPLE: dict[str, Any] = {
    "initializer": "he_normal",
    "optimizer": "momentum",
    "momentum": 0.8,
    "learning_rate": 0.01,
    "regularizer": "l2",
    "lambda": 1e-3,
    "dropout": 0.25,
    "batch_size": 64,
}


def example(**changes: Any) -> dict[str, Any]:
    """A deep copy of EXAMPLE with top-level keys replaced."""
    spec = copy.deepcopy(EXAMPLE)
    spec.update(changes)
    return spec


def template(spec: dict[str, Any]) -> TrialTemplate:
    return TrialTemplate.model_validate(spec)


def categorical(*choices: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "categorical", "choices": list(choices), **extra}


def float_range(low: float, high: float, **extra: Any) -> dict[str, Any]:
    return {"type": "float", "low": low, "high": high, **extra}


def int_range(low: int, high: int, **extra: Any) -> dict[str, Any]:
    return {"type": "int", "low": low, "high": high, **extra}


# --- the example spec -----------------------------------------------------------------------


def test_example_spec_builds() -> None:
    built = template(EXAMPLE)
    assert list(built.search_space) == list(EXAMPLE["search_space"])
    assert built.fixed == {"bias_initializer": "zeros"}
    assert built.early_stopping == EarlyStoppingConfig(patience=3, restore_best_weights=True)
    assert built.checkpoint.save_best_only is True
    assert set(built.search_space) <= set(PARAMETERS)


def test_config_for_maps_a_full_sample() -> None:
    config = template(EXAMPLE).config_for(SAMPLE)
    assert isinstance(config, TrialConfig)
    assert config.optimizer == {
        "class_name": "momentum",
        "config": {"learning_rate": 0.01, "momentum": 0.8},
    }
    assert config.kernel_initializer == {"class_name": "he_normal", "config": {"seed": None}}
    assert config.bias_initializer == {"class_name": "zeros", "config": {}}
    assert config.kernel_regularizer == {"class_name": "l2", "config": {"l2": 1e-3}}
    assert config.bias_regularizer is None
    assert config.activity_regularizer is None
    assert config.model.config["dropout"] == 0.25
    assert config.batch_size == 64
    assert config.early_stopping == EarlyStoppingConfig(patience=3, restore_best_weights=True)
    assert config.checkpoint.save_best_only is True


def test_template_wide_settings_reach_every_config() -> None:
    built = template(example(max_epochs=7, seed=11, objective="val_accuracy"))
    config = built.config_for(SAMPLE)
    assert (config.max_epochs, config.seed, config.objective) == (7, 11, "val_accuracy")
    assert config.dataset == built.dataset
    assert config.diagnosis == built.diagnosis


@pytest.mark.parametrize(
    ("regularizer", "expected"),
    [
        ("l1", {"l1": 1e-3}),
        ("l2", {"l2": 1e-3}),
        ("l1_l2", {"l1": 1e-3, "l2": 1e-3}),
    ],
)
def test_lambda_becomes_the_strength_of_the_chosen_regularizer(
    regularizer: str, expected: dict[str, float]
) -> None:
    config = template(EXAMPLE).config_for({**SAMPLE, "regularizer": regularizer, "lambda": 1e-3})
    assert config.kernel_regularizer == {"class_name": regularizer, "config": expected}


@pytest.mark.parametrize("mode", ["rows", "columns"])
def test_lambda_and_orthogonal_mode_configure_the_orthogonal_regularizer(mode: str) -> None:
    spec = example()
    spec["search_space"]["regularizer"] = categorical("none", "l2", "orthogonal")
    spec["search_space"]["lambda"]["when"] = {"regularizer": ["l2", "orthogonal"]}
    spec["search_space"]["orthogonal_mode"] = categorical(
        "rows", "columns", when={"regularizer": ["orthogonal"]}
    )
    config = template(spec).config_for(
        {**SAMPLE, "regularizer": "orthogonal", "lambda": 0.02, "orthogonal_mode": mode}
    )
    assert config.kernel_regularizer == {
        "class_name": "orthogonal",
        "config": {"factor": 0.02, "mode": mode},
    }


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("L1L2", {"class_name": "l1_l2", "config": {"l1": 0.5, "l2": 0.5}}),
        ("l1l2", {"class_name": "l1_l2", "config": {"l1": 0.5, "l2": 0.5}}),
        (
            "orthogonal_regularizer",
            {"class_name": "orthogonal", "config": {"factor": 0.5, "mode": "columns"}},
        ),
    ],
)
def test_regularizer_aliases_are_normalized_and_keep_lambda_and_mode(
    alias: str, expected: dict[str, Any]
) -> None:
    built = template({"fixed": {"regularizer": alias, "lambda": 0.5, "orthogonal_mode": "columns"}})
    assert built.config_for({}).kernel_regularizer == expected


def test_regularizer_without_lambda_keeps_its_keras_default_strength() -> None:
    config = template({"fixed": {"regularizer": "l2"}}).config_for({})
    assert config.kernel_regularizer == {"class_name": "l2", "config": {"l2": 0.01}}


def test_regularizer_none_means_no_kernel_regularizer() -> None:
    sample = {key: value for key, value in SAMPLE.items() if key != "lambda"}
    config = template(EXAMPLE).config_for({**sample, "regularizer": "none"})
    assert config.kernel_regularizer is None


def test_bias_and_activity_regularizers_take_their_own_lambdas() -> None:
    built = template(
        {
            "fixed": {
                "bias_regularizer": "l1",
                "bias_lambda": 0.5,
                "activity_regularizer": "l2",
                "activity_lambda": 0.25,
            }
        }
    )
    config = built.config_for({})
    assert config.kernel_regularizer is None
    assert config.bias_regularizer == {"class_name": "l1", "config": {"l1": 0.5}}
    assert config.activity_regularizer == {"class_name": "l2", "config": {"l2": 0.25}}


@pytest.mark.parametrize(
    ("optimizer", "expected"),
    [
        ("sgd", {"learning_rate": 0.05, "momentum": 0.7, "nesterov": False}),
        ("momentum", {"learning_rate": 0.05, "momentum": 0.7}),
        ("nesterov", {"learning_rate": 0.05, "momentum": 0.7}),
        (
            "rmsprop",
            {
                "learning_rate": 0.05,
                "rho": 0.9,
                "momentum": 0.7,
                "epsilon": 1e-7,
                "centered": False,
            },
        ),
        (
            "adam",
            {
                "learning_rate": 0.05,
                "beta_1": 0.9,
                "beta_2": 0.999,
                "epsilon": 1e-7,
                "amsgrad": False,
            },
        ),
    ],
)
def test_fixed_optimizer_sub_parameter_lands_only_where_accepted(
    optimizer: str, expected: dict[str, Any]
) -> None:
    built = template(
        {
            "search_space": {
                "optimizer": categorical("sgd", "momentum", "nesterov", "rmsprop", "adam")
            },
            "fixed": {"momentum": 0.7, "learning_rate": 0.05},
        }
    )
    config = built.config_for({"optimizer": optimizer})
    assert config.optimizer == {"class_name": optimizer, "config": expected}


def test_sampled_adam_parameters_reach_adam() -> None:
    built = template(
        {
            "search_space": {
                "optimizer": categorical("adam", "adamw"),
                "beta_1": float_range(0.8, 0.95),
                "weight_decay": float_range(0.0, 0.1, when={"optimizer": ["adamw"]}),
            }
        }
    )
    adam = built.config_for({"optimizer": "adam", "beta_1": 0.85})
    assert adam.optimizer == {
        "class_name": "adam",
        "config": {
            "learning_rate": 0.001,
            "beta_1": 0.85,
            "beta_2": 0.999,
            "epsilon": 1e-7,
            "amsgrad": False,
        },
    }
    adamw = built.config_for({"optimizer": "adamw", "beta_1": 0.85, "weight_decay": 0.05})
    assert adamw.optimizer == {
        "class_name": "adamw",
        "config": {
            "learning_rate": 0.001,
            "weight_decay": 0.05,
            "beta_1": 0.85,
            "beta_2": 0.999,
            "epsilon": 1e-7,
            "amsgrad": False,
        },
    }


def test_default_optimizer_is_adam_with_its_keras_defaults() -> None:
    config = template({}).config_for({})
    assert config.optimizer == {
        "class_name": "adam",
        "config": {
            "learning_rate": 0.001,
            "beta_1": 0.9,
            "beta_2": 0.999,
            "epsilon": 1e-7,
            "amsgrad": False,
        },
    }


@pytest.mark.parametrize(
    ("values", "hidden_units"),
    [
        ({"units": 32, "n_layers": 3}, (32, 32, 32)),
        ({"units": 48}, (48, 48)),  # depth from the model (two layers by default)
        ({"n_layers": 1}, (128,)),  # width from the model's first layer
        ({"n_layers": 0}, ()),
        ({}, (128, 128)),
    ],
)
def test_units_and_n_layers_set_hidden_units(
    values: dict[str, int], hidden_units: tuple[int, ...]
) -> None:
    built = template({"search_space": {"units": int_range(8, 64), "n_layers": int_range(0, 3)}})
    assert built.config_for(values).model.config["hidden_units"] == hidden_units


def test_units_and_n_layers_start_from_the_template_model() -> None:
    built = template({"model": {"hidden_units": [20, 10, 5]}, "fixed": {"units": 7}})
    assert built.config_for({}).model.config["hidden_units"] == (7, 7, 7)


def test_dropout_activation_and_kernel_size_land_in_the_model() -> None:
    built = template(
        {
            "model": {"type": "cnn", "channels": [8]},
            "search_space": {
                "dropout": float_range(0.0, 0.5),
                "activation": categorical("relu", "leaky_relu"),
                "kernel_size": categorical(3, 5),
            },
        }
    )
    model = built.config_for({"dropout": 0.3, "activation": "leaky_relu", "kernel_size": 5}).model
    assert (model.type, model.config["channels"]) == ("cnn", (8,))
    config = model.config
    assert (config["dropout"], config["activation"], config["kernel_size"]) == (
        0.3,
        "leaky_relu",
        5,
    )


def test_batch_size_defaults_to_32() -> None:
    assert template({}).config_for({}).batch_size == 32
    assert template({"fixed": {"batch_size": 256}}).config_for({}).batch_size == 256


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("he_normal", {"class_name": "he_normal", "config": {"seed": None}}),
        ("HeNormal", {"class_name": "he_normal", "config": {"seed": None}}),
        ("GlorotUniform", {"class_name": "glorot_uniform", "config": {"seed": None}}),
        (
            "normal",
            {"class_name": "random_normal", "config": {"seed": None, "mean": 0.0, "stddev": 0.05}},
        ),
        ("ones", {"class_name": "ones", "config": {}}),
    ],
)
def test_initializer_names_are_normalized(name: str, expected: dict[str, Any]) -> None:
    assert template({}).config_for({"initializer": name}).kernel_initializer == expected
    assert template({"fixed": {"initializer": name}}).config_for({}).kernel_initializer == expected
    fixed_bias = template({"fixed": {"bias_initializer": name}})
    assert fixed_bias.config_for({}).bias_initializer == expected


def test_default_initializers_are_keras_dense_defaults() -> None:
    config = template({}).config_for({})
    assert config.kernel_initializer == {"class_name": "glorot_uniform", "config": {"seed": None}}
    assert config.bias_initializer == {"class_name": "zeros", "config": {}}


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"momentum": 1.5}, "params.momentum"),
        ({"batch_size": 48}, "params.batch_size"),
        ({"initializer": "nope"}, "params.initializer"),
        ({"bogus": 1}, "params.bogus"),
    ],
)
def test_config_for_checks_the_sampled_values(params: dict[str, Any], path: str) -> None:
    with pytest.raises(ValueError, match=rf"^{path}: "):
        template(EXAMPLE).config_for({**SAMPLE, **params})


# --- bad templates ---------------------------------------------------------------------------

BAD_TEMPLATES = [
    pytest.param(
        {"search_space": {"units_per_layer": int_range(8, 64)}},
        "search_space.units_per_layer",
        "unknown parameter 'units_per_layer'",
        id="unknown-search-parameter",
    ),
    pytest.param(
        {"fixed": {"lr": 0.01}}, "fixed.lr", "unknown parameter 'lr'", id="unknown-fixed-parameter"
    ),
    pytest.param(
        {"search_space": {"initializer": categorical("he_normal", "he_nromal")}},
        "search_space.initializer.choices[1]",
        "unknown initializer 'he_nromal'",
        id="unknown-initializer-choice",
    ),
    pytest.param(
        {"fixed": {"bias_initializer": "xavier"}},
        "fixed.bias_initializer",
        "unknown initializer 'xavier'",
        id="unknown-bias-initializer",
    ),
    pytest.param(
        {"search_space": {"optimizer": categorical("sgd", "nadam")}},
        "search_space.optimizer.choices[1]",
        "unknown optimizer 'nadam'",
        id="unknown-optimizer-choice",
    ),
    pytest.param(
        {"fixed": {"optimizer": "lbfgs"}},
        "fixed.optimizer",
        "unknown optimizer 'lbfgs'",
        id="unknown-fixed-optimizer",
    ),
    pytest.param(
        {"search_space": {"regularizer": categorical("none", "l3")}},
        "search_space.regularizer.choices[1]",
        "unknown regularizer 'l3'",
        id="unknown-regularizer-choice",
    ),
    pytest.param(
        {"fixed": {"activity_regularizer": "dropout"}},
        "fixed.activity_regularizer",
        "unknown regularizer 'dropout'",
        id="unknown-activity-regularizer",
    ),
    pytest.param(
        {"fixed": {"activation": "swish"}},
        "fixed.activation",
        "unknown activation 'swish'",
        id="unknown-activation",
    ),
    pytest.param(
        {"fixed": {"batch_size": 48}},
        "fixed.batch_size",
        "must be a power of two, got 48",
        id="fixed-batch-size-not-power-of-two",
    ),
    pytest.param(
        {"search_space": {"batch_size": categorical(32, 100)}},
        "search_space.batch_size.choices[1]",
        "must be a power of two, got 100",
        id="batch-size-choice-not-power-of-two",
    ),
    pytest.param(
        {"fixed": {"batch_size": 64.0}},
        "fixed.batch_size",
        "must be an integer",
        id="batch-size-float",
    ),
    pytest.param(
        {"search_space": {"batch_size": int_range(16, 128)}},
        "search_space.batch_size",
        "use categorical choices of powers of two",
        id="batch-size-int-range",
    ),
    pytest.param(
        {"search_space": {"units": float_range(8.0, 64.0)}},
        "search_space.units",
        "'units' takes whole numbers",
        id="float-range-for-integer-parameter",
    ),
    pytest.param(
        {"search_space": {"n_layers": int_range(1, 100)}},
        "search_space.n_layers.high",
        "must be between 0 and 64",
        id="n-layers-too-deep",
    ),
    pytest.param(
        {"search_space": {"learning_rate": float_range(0.0, 0.1)}},
        "search_space.learning_rate.low",
        "must be in (0.0, 10.0]",
        id="learning-rate-zero-low",
    ),
    pytest.param(
        {"fixed": {"learning_rate": -0.01}},
        "fixed.learning_rate",
        "got -0.01",
        id="fixed-negative-learning-rate",
    ),
    pytest.param(
        {"search_space": {"dropout": float_range(0.0, 1.0)}},
        "search_space.dropout.high",
        "must be in [0.0, 1.0)",
        id="dropout-high-one",
    ),
    pytest.param({"fixed": {"dropout": 1.0}}, "fixed.dropout", "got 1.0", id="fixed-dropout-one"),
    pytest.param(
        {"fixed": {"nesterov": "yes"}},
        "fixed.nesterov",
        "must be true or false",
        id="flag-not-bool",
    ),
    pytest.param(
        {"search_space": {"orthogonal_mode": categorical("rows", "diagonal")}},
        "search_space.orthogonal_mode.choices[1]",
        "must be 'rows' or 'columns'",
        id="unknown-orthogonal-mode",
    ),
    pytest.param(
        {
            "search_space": {
                "optimizer": categorical("momentum", "adam"),
                "momentum": float_range(0.5, 0.99),
            }
        },
        "search_space.momentum",
        "optimizer 'adam' takes no 'momentum'",
        id="momentum-without-when",
    ),
    pytest.param(
        {
            "search_space": {
                "optimizer": categorical("momentum", "adam"),
                "momentum": float_range(0.5, 0.99, when={"optimizer": ["momentum", "adam"]}),
            }
        },
        "search_space.momentum",
        "optimizer 'adam' takes no 'momentum'",
        id="momentum-when-includes-adam",
    ),
    pytest.param(
        {"search_space": {"momentum": float_range(0.5, 0.99)}},
        "search_space.momentum",
        "optimizer 'adam' takes no 'momentum'",
        id="momentum-with-default-adam",
    ),
    pytest.param(
        {"fixed": {"optimizer": "sgd"}, "search_space": {"rho": float_range(0.8, 0.99)}},
        "search_space.rho",
        "optimizer 'sgd' takes no 'rho'",
        id="rho-with-fixed-sgd",
    ),
    pytest.param(
        {
            "search_space": {
                "regularizer": categorical("none", "l2"),
                "lambda": float_range(1e-6, 1e-2, log=True),
            }
        },
        "search_space.lambda",
        "regularizer may be 'none'",
        id="lambda-without-when",
    ),
    pytest.param(
        {"search_space": {"lambda": float_range(1e-6, 1e-2, log=True)}},
        "search_space.lambda",
        "regularizer may be 'none'",
        id="lambda-without-any-regularizer",
    ),
    pytest.param(
        {"search_space": {"bias_lambda": float_range(1e-6, 1e-2, log=True)}},
        "search_space.bias_lambda",
        "bias_regularizer may be 'none'",
        id="bias-lambda-without-bias-regularizer",
    ),
    pytest.param(
        {"search_space": {"dropout": float_range(0.0, 0.5)}, "fixed": {"dropout": 0.2}},
        "fixed.dropout",
        "'dropout' is also in the search space",
        id="fixed-and-searched",
    ),
    pytest.param(
        {"search_space": {"momentum": float_range(0.5, 0.9, when={"optimizer": ["momentum"]})}},
        "search_space",
        "'when' refers to 'optimizer', which is not in the search space",
        id="when-on-missing-parameter",
    ),
    pytest.param(
        {"learning_rate": 0.01}, "learning_rate", "Extra inputs are not permitted", id="extra-field"
    ),
    pytest.param(
        {"dataset": {"validation_split": 0.5, "test_split": 0.4}},
        "dataset",
        "validation_split + test_split must leave at least 20% for training",
        id="splits-too-large",
    ),
    pytest.param(
        {"dataset": {"name": "csv", "target": "label"}},
        "dataset",
        "dataset 'csv': Field required",
        id="csv-without-path",
    ),
    pytest.param(
        {"dataset": {"name": "csv", "path": "data.csv"}},
        "dataset",
        "dataset 'csv': Field required",
        id="csv-without-target",
    ),
    pytest.param(
        {"model": {"type": "cnn", "kernel_size": 4}},
        "model",
        "kernel_size must be odd (same padding), got 4",
        id="model-even-kernel-size",
    ),
    pytest.param(
        {"fixed": {"kernel_size": 4}}, "fixed.kernel_size", "must be odd", id="fixed-even-kernel"
    ),
    pytest.param(
        {"search_space": {"kernel_size": categorical(3, 4)}},
        "search_space.kernel_size.choices[1]",
        "must be odd, got 4",
        id="even-kernel-size-choice",
    ),
    pytest.param(
        {"search_space": {"kernel_size": int_range(1, 7)}},
        "search_space.kernel_size",
        "must be odd, got 2",
        id="kernel-size-range-with-even-values",
    ),
    pytest.param(
        {"objective": "val_f1"}, "objective", "objective must be one of", id="unknown-objective"
    ),
    pytest.param(
        {"early_stopping": {"monitor": "val_auc"}},
        "early_stopping",
        "monitor must be one of",
        id="early-stopping-unknown-monitor",
    ),
    pytest.param(
        {"early_stopping": {"monitor": "lr", "mode": "auto"}},
        "early_stopping",
        "monitor must be one of",
        id="early-stopping-auto-mode-unknown-metric",
    ),
    pytest.param(
        {"checkpoint": {"monitor": "val_precision", "mode": "max"}},
        "checkpoint",
        "monitor must be one of",
        id="checkpoint-unknown-monitor",
    ),
    pytest.param(
        {"checkpoint": {"save_freq": 0}},
        "checkpoint",
        "save_freq must be 'epoch' or a positive integer",
        id="checkpoint-save-freq-zero",
    ),
    pytest.param(
        {"max_epochs": 0}, "max_epochs", "greater than or equal to 1", id="max-epochs-zero"
    ),
]


@pytest.mark.parametrize(("spec", "path", "message"), BAD_TEMPLATES)
def test_bad_template_names_the_offending_field(
    spec: dict[str, Any], path: str, message: str
) -> None:
    with pytest.raises(ValidationError) as error:
        TrialTemplate.model_validate(spec)
    text = str(error.value)
    assert path in text
    assert message in text


def test_there_are_at_least_twenty_bad_templates() -> None:
    assert len(BAD_TEMPLATES) >= 20


def test_unknown_initializer_message_lists_known_names() -> None:
    with pytest.raises(ValidationError) as error:
        TrialTemplate.model_validate({"fixed": {"initializer": "he_nromal"}})
    text = str(error.value)
    for name in initializers.names():
        assert name in text


@pytest.mark.parametrize(
    ("parameter", "registry_names"),
    [("optimizer", optimizers.names), ("regularizer", regularizers.names)],
)
def test_unknown_optimizer_and_regularizer_messages_list_known_names(
    parameter: str, registry_names: Any
) -> None:
    with pytest.raises(ValidationError) as error:
        TrialTemplate.model_validate({"fixed": {parameter: "nope"}})
    text = str(error.value)
    for name in registry_names():
        assert name in text


def test_a_valid_conditional_sub_parameter_is_accepted() -> None:
    built = template(
        {
            "search_space": {
                "optimizer": categorical("sgd", "rmsprop", "adam"),
                "momentum": float_range(0.0, 0.9, when={"optimizer": ["sgd", "rmsprop"]}),
                "rho": float_range(0.8, 0.99, when={"optimizer": ["rmsprop"]}),
            }
        }
    )
    config = built.config_for({"optimizer": "rmsprop", "momentum": 0.5, "rho": 0.95})
    assert config.optimizer == {
        "class_name": "rmsprop",
        "config": {
            "learning_rate": 0.001,
            "rho": 0.95,
            "momentum": 0.5,
            "epsilon": 1e-7,
            "centered": False,
        },
    }


def test_lambda_with_a_fixed_regularizer_needs_no_when() -> None:
    built = template(
        {"fixed": {"regularizer": "l1"}, "search_space": {"lambda": float_range(1e-5, 1e-3)}}
    )
    config = built.config_for({"lambda": 1e-4})
    assert config.kernel_regularizer == {"class_name": "l1", "config": {"l1": 1e-4}}


def test_template_is_frozen() -> None:
    built = template(EXAMPLE)
    with pytest.raises(ValidationError):
        setattr(built, "seed", 3)  # noqa: B010 (mypy knows the field is read-only)


def test_errors_carry_the_json_path_of_the_offending_field() -> None:
    bad = {"search_space": {"initializer": {"type": "categorical", "choices": ["he_normal", "x"]}}}
    with pytest.raises(ValidationError) as caught:
        TrialTemplate.model_validate(bad)
    error = caught.value.errors()[0]["ctx"]["error"]
    assert isinstance(error, SpecError)
    assert error.path == ("search_space", "initializer", "choices", 1)
    assert str(error).startswith("search_space.initializer.choices[1]: unknown initializer 'x'")
