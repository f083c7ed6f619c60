"""A study's first trial starts from Keras's defaults (where its search space holds them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.db.models import Trial
from tests.test_worker import add_study, run_worker_until_idle, sessions, spec
from trainer.template import TrialTemplate

__all__ = ["sessions"]

SPACE: dict[str, Any] = {
    "initializer": {
        "type": "categorical",
        "choices": ["glorot_uniform", "he_normal", "lecun_normal"],
    },
    "optimizer": {"type": "categorical", "choices": ["sgd", "momentum", "adam"]},
    "momentum": {"type": "float", "low": 0.5, "high": 0.99, "when": {"optimizer": ["momentum"]}},
    "learning_rate": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
    "regularizer": {"type": "categorical", "choices": ["none", "l2"]},
    "lambda": {
        "type": "float",
        "low": 1e-6,
        "high": 1e-2,
        "log": True,
        "when": {"regularizer": ["l2"]},
    },
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "batch_size": {"type": "categorical", "choices": [32, 64]},
    "units": {"type": "int", "low": 16, "high": 64},
}


def defaults(**changes: Any) -> dict[str, Any]:
    return TrialTemplate.model_validate({"search_space": SPACE, **changes}).default_params()


def test_the_defaults_are_kerass_with_he_for_relu_and_nothing_for_what_keras_does_not_fix() -> None:
    assert defaults() == {
        "initializer": "he_normal",  # the model's activation is ReLU
        "optimizer": "adam",
        "learning_rate": 1e-3,
        "regularizer": "none",  # so lambda is inactive and not fixed
        "dropout": 0.0,
        "batch_size": 32,
    }  # units: no Keras default, left to the sampler


def test_the_defaults_follow_the_activation_and_the_optimizer() -> None:
    tanh = defaults(model={"type": "mlp", "activation": "tanh"})
    assert tanh["initializer"] == "glorot_uniform"
    sgd_only = {**SPACE, "optimizer": {"type": "categorical", "choices": ["sgd", "momentum"]}}
    with_sgd = TrialTemplate.model_validate({"search_space": sgd_only}).default_params()
    assert "optimizer" not in with_sgd  # adam is not a choice: the sampler picks
    fixed_sgd = TrialTemplate.model_validate(
        {"search_space": {"learning_rate": SPACE["learning_rate"]}, "fixed": {"optimizer": "sgd"}}
    )
    assert fixed_sgd.default_params() == {"learning_rate": 0.01}  # Keras's SGD default


def test_a_default_outside_the_space_is_left_to_the_sampler() -> None:
    narrow = {
        "learning_rate": {"type": "float", "low": 0.01, "high": 0.1},
        "batch_size": {"type": "categorical", "choices": [64, 128]},
        "dropout": {"type": "float", "low": 0.1, "high": 0.5},
    }
    assert TrialTemplate.model_validate({"search_space": narrow}).default_params() == {}


@pytest.mark.parametrize(
    ("sampler", "starts_from_defaults"),
    [
        ({"name": "tpe", "seed": 1}, True),
        ({"name": "random", "seed": 1}, False),
        ({"name": "tpe", "seed": 1, "first_trial": "sampled"}, False),
        ({"name": "random", "seed": 1, "first_trial": "keras_defaults"}, True),
    ],
)
def test_the_first_trial_runs_the_defaults_unless_the_sampler_says_otherwise(
    migrated_database_url: str,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    sampler: dict[str, Any],
    starts_from_defaults: bool,
) -> None:
    space = {
        "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
        "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    }
    study_id = add_study(
        sessions, spec(search_space=space, sampler=sampler, budget={"n_trials": 2, "max_epochs": 1})
    )
    run_worker_until_idle(migrated_database_url, tmp_path)
    with sessions() as session:
        first, second = session.scalars(
            select(Trial).where(Trial.study_id == study_id).order_by(Trial.number)
        ).all()
    keras = {"optimizer": "adam", "learning_rate": 1e-3}
    assert (first.params == keras) is starts_from_defaults
    assert second.params != keras  # only the first trial
