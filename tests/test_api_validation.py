"""A bad study spec is refused with 422 naming the offending field's JSON path, and nothing
is stored; the error shape for pydantic's, the trainer's and the server's own checks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from service.api import create_app
from service.api.validation import error_details
from service.db.models import Study
from tests.api_fixtures import AUTH, TestClient, make_settings, valid_spec

pytest_plugins = ["tests.api_fixtures"]

SPACE = valid_spec()["search_space"]
MOMENTUM = {"type": "float", "low": 0.1, "high": 0.9}


@dataclass(frozen=True)
class Bad:
    name: str
    body: Any
    loc: list[str | int]
    says: str
    """A fragment of the message (case-insensitive)."""


def space(**params: Any) -> dict[str, Any]:
    return valid_spec(search_space=params)


BAD_SPECS = [
    Bad("unknown top-level field", valid_spec(bogus=1), ["body", "bogus"], "extra"),
    Bad("unknown budget field", valid_spec(budget={"trials": 5}), ["body", "budget", "trials"],
        "extra"),
    Bad("wrong type", valid_spec(budget={"n_trials": "many"}), ["body", "budget", "n_trials"],
        "valid integer"),
    Bad("no name", {"search_space": SPACE}, ["body", "name"], "required"),
    Bad("empty name", valid_spec(name=""), ["body", "name"], "at least 1 character"),
    Bad("no search space", {"name": "x"}, ["body", "search_space"], "required"),
    Bad("not an object", [1, 2], ["body"], "dictionary"),
    Bad("unknown initializer",
        space(initializer={"type": "categorical", "choices": ["he_normal", "nope"]}),
        ["body", "search_space", "initializer", "choices", 1], "unknown initializer 'nope'"),
    Bad("unknown optimizer (fixed)",
        space(learning_rate=SPACE["learning_rate"]) | {"fixed": {"optimizer": "adamax2"}},
        ["body", "fixed", "optimizer"], "unknown optimizer 'adamax2'"),
    Bad("unknown regularizer",
        space(regularizer={"type": "categorical", "choices": ["l3"]}),
        ["body", "search_space", "regularizer", "choices", 0], "unknown regularizer 'l3'"),
    Bad("unknown parameter", space(colour={"type": "categorical", "choices": ["red"]}),
        ["body", "search_space", "colour"], "unknown parameter 'colour'"),
    Bad("low > high", space(learning_rate={"type": "float", "low": 0.5, "high": 0.1}),
        ["body", "search_space", "learning_rate"], "low (0.5) must not exceed high (0.1)"),
    Bad("int low > high", space(units={"type": "int", "low": 64, "high": 8}),
        ["body", "search_space", "units"], "must not exceed"),
    Bad("log scale, low <= 0",
        space(learning_rate={"type": "float", "low": 0.0, "high": 0.1, "log": True}),
        ["body", "search_space", "learning_rate"], "log-scale range needs low > 0"),
    Bad("bound outside the parameter's domain",
        space(learning_rate={"type": "float", "low": 0.1, "high": 20}),
        ["body", "search_space", "learning_rate", "high"], "must be in (0.0, 10.0]"),
    Bad("missing bound", space(learning_rate={"type": "float", "high": 0.1}),
        ["body", "search_space", "learning_rate", "low"], "required"),
    Bad("empty choices", space(optimizer={"type": "categorical", "choices": []}),
        ["body", "search_space", "optimizer", "choices"], "at least 1 item"),
    Bad("unknown distribution", space(learning_rate={"type": "normal", "low": 0, "high": 1}),
        ["body", "search_space", "learning_rate"], "'normal'"),
    Bad("a choice that is a list",
        space(optimizer={"type": "categorical", "choices": [["sgd"]]}),
        ["body", "search_space", "optimizer", "choices", 0], "a valid boolean, a valid integer"),
    Bad("condition on an undefined parameter",
        space(momentum={**MOMENTUM, "when": {"optimizer": ["sgd"]}}),
        ["body", "search_space", "momentum", "when", "optimizer"],
        "'when' refers to 'optimizer', which is not in the search"),
    Bad("condition on an impossible value",
        space(**SPACE, momentum={**MOMENTUM, "when": {"optimizer": ["rmsprop"]}}),
        ["body", "search_space", "momentum", "when", "optimizer"],
        "values ['rmsprop'] are not among its choices"),
    Bad("conditions in a cycle",
        space(**SPACE, a={"type": "categorical", "choices": [1, 2], "when": {"b": ["x"]}},
              b={"type": "categorical", "choices": ["x", "y"], "when": {"a": [1]}}),
        ["body", "search_space", "a", "when"], "conditions form a cycle: a -> b -> a"),
    Bad("sub-parameter of an optimizer that may not take it", space(**SPACE, momentum=MOMENTUM),
        ["body", "search_space", "momentum"], "optimizer 'adam' takes no 'momentum'"),
    Bad("lambda where the regularizer may be none",
        space(regularizer={"type": "categorical", "choices": ["none", "l2"]},
              **{"lambda": {"type": "float", "low": 0.0, "high": 0.1}}),
        ["body", "search_space", "lambda"], "regularizer may be 'none'"),
    Bad("fixed value out of range", valid_spec(fixed={"dropout": 1.5}),
        ["body", "fixed", "dropout"], "must be in [0.0, 1.0)"),
    Bad("even kernel size", valid_spec(model={"kernel_size": 4}), ["body", "model", "kernel_size"],
        "kernel_size must be odd"),
    Bad("unknown objective metric", valid_spec(objective={"metric": "f1"}),
        ["body", "objective", "metric"], "'val_loss'"),
    Bad("unknown EarlyStopping monitor", valid_spec(early_stopping={"monitor": "val_f1"}),
        ["body", "early_stopping"], "monitor must be one of"),
    Bad("unknown sampler", valid_spec(sampler={"name": "bayes"}), ["body", "sampler", "name"],
        "'tpe'"),
    Bad("priority out of range", valid_spec(priority=5000), ["body", "priority"],
        "less than or equal to 1000"),
    Bad("a file path instead of an upload",
        valid_spec(dataset={"name": "csv", "path": "/etc/passwd", "target": "y"}),
        ["body", "dataset", "name"], "must be uploaded with POST /api/v1/datasets"),
    Bad("unknown built-in data set", valid_spec(dataset={"name": "mnist"}),
        ["body", "dataset", "name"], "digits, npz, synthetic"),
    Bad("bad upload id", valid_spec(dataset={"id": 0}), ["body", "dataset", "id"],
        "greater than or equal to 1"),
    Bad("upload that does not exist", valid_spec(dataset={"id": 42}),
        ["body", "dataset", "id"], "no uploaded data set has id 42"),
    Bad("a grid of millions of points (tiny step)",
        valid_spec(sampler={"name": "grid"},
                   search_space={"dropout": {"type": "float", "low": 0.0, "high": 0.5,
                                             "step": 5e-8}}),
        ["body", "search_space", "dropout"], "more than 100,000 points"),
    Bad("a grid too large only as a product",
        valid_spec(sampler={"name": "grid"},
                   search_space={"units": {"type": "int", "low": 1, "high": 1000},
                                 "learning_rate": {"type": "float", "low": 0.001, "high": 0.1,
                                                   "step": 0.0005}}),
        ["body", "search_space", "learning_rate"], "more than 100,000 points"),
    Bad("upload id beyond any row", valid_spec(dataset={"id": 10**30}),
        ["body", "dataset", "id"], "less than or equal to"),
    Bad("negative base seed", valid_spec(seed=-1), ["body", "seed"], "greater than or equal to 0"),
    Bad("base seed beyond numpy's range", valid_spec(seed=2**32), ["body", "seed"],
        "less than or equal to 2147483647"),
    Bad("sampler seed beyond numpy's range", valid_spec(sampler={"seed": 2**40}),
        ["body", "sampler", "seed"], "less than or equal to 4294967295"),
    Bad("split seed beyond numpy's range", valid_spec(dataset={"name": "digits", "seed": -5}),
        ["body", "dataset", "seed"], "greater than or equal to 0"),
    Bad("epochs beyond any server's ceiling", valid_spec(budget={"max_epochs": 10**9}),
        ["body", "budget", "max_epochs"], "less than or equal to 100000"),
    Bad("too many trials", valid_spec(budget={"n_trials": 101}),
        ["body", "budget", "n_trials"], "at most 100 trials per study, got 101"),
    Bad("too many epochs", valid_spec(budget={"max_epochs": 51}),
        ["body", "budget", "max_epochs"], "at most 50 epochs per trial"),
    Bad("too many parallel trials", valid_spec(budget={"max_parallel_trials": 5}),
        ["body", "budget", "max_parallel_trials"], "at most 4 parallel trials"),
    Bad("timeout too long", valid_spec(budget={"timeout_s": 3600.5}),
        ["body", "budget", "timeout_s"], "at most 3600 seconds of timeout, got 3600.5"),
    # Too large to train: each once made a worker allocate until it failed every trial.
    Bad("an MLP of 8.6 billion weights",
        valid_spec(search_space={}, model={"type": "mlp", "hidden_units": [65536] * 3}),
        ["body", "model"], "the largest model this spec allows has 8,594,"),
    Bad("a CNN of 65,536-channel convolutions",
        valid_spec(search_space={}, model={"type": "cnn", "channels": [65536] * 2}),
        ["body", "model"], "(HPS_MAX_MODEL_PARAMETERS)"),
    Bad("a search space whose widest layers are too large",
        valid_spec(search_space={"units": {"type": "int", "low": 8, "high": 65536},
                                 "n_layers": {"type": "int", "low": 1, "high": 4}}),
        ["body", "search_space"], "this server allows at most 100,000,000"),
    Bad("synthetic data of 40 GB",
        valid_spec(dataset={"name": "synthetic",
                            "config": {"n_samples": 1_000_000, "n_features": 10_000}}),
        ["body", "dataset"], "the data would take 37.3 GB in memory"),
]  # fmt: skip


@pytest.fixture
def limited(migrated_database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    """An app with small budget limits."""
    settings = make_settings(
        migrated_database_url,
        tmp_path / "data",
        max_trials_per_study=100,
        max_epochs_per_trial=50,
        max_parallel_trials=4,
        max_timeout_s=3600,
    )
    with TestClient(create_app(settings), headers=AUTH) as client:
        yield client


def test_bad_specs_are_refused_at_their_path_and_nothing_is_stored(
    limited: TestClient, db: sessionmaker[Session], subtests: pytest.Subtests
) -> None:
    assert len(BAD_SPECS) >= 20
    for bad in BAD_SPECS:
        with subtests.test(msg=bad.name):
            response = limited.post("/api/v1/studies", json=bad.body)
            assert response.status_code == 422, response.text
            detail = response.json()["detail"]
            assert [error["loc"] for error in detail] == [bad.loc]
            assert bad.says.lower() in detail[0]["msg"].lower()
            assert not detail[0]["msg"].startswith("Value error")
            assert detail[0]["type"]
    with db() as session:
        assert session.scalar(select(func.count()).select_from(Study)) == 0
    assert limited.post("/api/v1/studies", json=valid_spec()).status_code == 201


def test_every_server_limit_is_reported_at_once(limited: TestClient) -> None:
    body = valid_spec(budget={"n_trials": 1000, "max_epochs": 1000}, dataset={"id": 7})
    detail = limited.post("/api/v1/studies", json=body).json()["detail"]
    assert [error["loc"] for error in detail] == [
        ["body", "budget", "n_trials"],
        ["body", "budget", "max_epochs"],
        ["body", "dataset", "id"],
    ]


def test_malformed_json_is_422_in_the_same_shape(limited: TestClient) -> None:
    response = limited.post(
        "/api/v1/studies", content=b'{"name": ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"][0] == "body"
    assert error["type"] == "json_invalid"
    assert "JSON" in error["msg"]


def test_error_details_keep_the_closest_union_member() -> None:
    """Unit check of the path cleaning, on errors shaped as pydantic reports them."""
    body = {"dataset": {"id": 0}}
    errors = [
        {"loc": ("body", "dataset", "function-after[_check(), DatasetConfig]", "id"),
         "type": "unexpected_keyword_argument", "msg": "Unexpected keyword argument"},
        {"loc": ("body", "dataset", "UploadedDataset", "id"), "type": "greater_than_equal",
         "msg": "Input should be greater than or equal to 1"},
        {"loc": ("query", "limit"), "type": "less_than_equal", "msg": "too big"},
    ]  # fmt: skip
    assert error_details(errors, body) == [
        {
            "loc": ["body", "dataset", "id"],
            "msg": "Input should be greater than or equal to 1",
            "type": "greater_than_equal",
        },
        {"loc": ["query", "limit"], "msg": "too big", "type": "less_than_equal"},
    ]
