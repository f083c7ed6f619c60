"""The server's budget limits on a study (settings), checked before anything is stored."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from service.config import Settings
from service.studies.errors import Issue
from service.studies.spec import StudySpec
from trainer import Choice, DatasetConfig, declared_shape, input_kind, parameter_count

FLOAT_BYTES = 4
LABEL_BYTES = 8


def budget_issues(spec: StudySpec, settings: Settings) -> list[Issue]:
    """Every budget figure of `spec` beyond what this server allows."""
    budget = spec.budget
    checks: list[tuple[str, float | None, float, str]] = [
        ("n_trials", budget.n_trials, settings.max_trials_per_study, "trials per study"),
        ("max_epochs", budget.max_epochs, settings.max_epochs_per_trial, "epochs per trial"),
        (
            "max_parallel_trials",
            budget.max_parallel_trials,
            settings.max_parallel_trials,
            "parallel trials",
        ),
        ("timeout_s", budget.timeout_s, settings.max_timeout_s, "seconds of timeout"),
    ]
    return [
        Issue(
            ("budget", field),
            f"this server allows at most {_number(limit)} {what}, got {_number(value)}",
            "less_than_equal",
        )
        for field, value, limit, what in checks
        if value is not None and value > limit
    ]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


Shape = tuple[int, tuple[int, ...], int]
"""Rows, one input's shape, outputs."""


def size_issues(
    spec: StudySpec, settings: Settings, dataset: DatasetConfig, shape: Shape | None = None
) -> list[Issue]:
    """The data and the largest model of `spec` beyond what this server lets a worker hold,
    estimated before anything is stored (a worker would otherwise try to allocate it, run out
    of memory and fail every trial). `shape`: an upload's, from its row; a built-in dataset's
    is known from its config, a plugin's only once loaded (then only the model is checked,
    where its inputs are known)."""
    image = input_kind(spec.model.type) == "image"
    if shape is None:
        shape = declared_shape(dataset.name, dataset.config, image=image)
    if shape is None:
        return []
    rows, inputs, outputs = shape
    issues = []
    data_bytes = rows * (math.prod(inputs) * FLOAT_BYTES + LABEL_BYTES)
    if data_bytes > settings.max_dataset_bytes:
        issues.append(
            Issue(
                ("dataset",),
                f"the data would take {_bytes(data_bytes)} in memory ({rows:,} rows of "
                f"{math.prod(inputs):,} float32 features); this server allows at most "
                f"{_bytes(settings.max_dataset_bytes)} (HPS_MAX_DATASET_BYTES)",
                "less_than_equal",
            )
        )
    if image and len(inputs) != 3:
        return issues  # an image model on data of unknown image shape: known once loaded
    template = spec.template(dataset)
    largest = template.config_for(template.search_space.sample(_Largest()))
    parameters = parameter_count(largest.model.type, largest.model.config, inputs, outputs)
    if parameters is not None and parameters > settings.max_model_parameters:
        issues.append(
            Issue(
                ("search_space",) if _searches_size(spec) else ("model",),
                f"the largest model this spec allows has {parameters:,} parameters "
                f"({_shape_of(largest.model.type, largest.model.config)}); this server allows "
                "at most "
                f"{settings.max_model_parameters:,} (HPS_MAX_MODEL_PARAMETERS)",
                "less_than_equal",
            )
        )
    return issues


class _Largest:
    """Picks, for each parameter, what makes the model largest: a number's high end, the
    largest number among categorical choices. Only the model's size is read from its picks."""

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        return high

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        return high

    def suggest_categorical(self, name: str, choices: Sequence[Choice]) -> Choice:
        return max(choices, key=_size)


def _size(choice: Choice) -> float:
    return float(choice) if isinstance(choice, int | float) else 0.0


def _bytes(count: int) -> str:
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if count >= scale:
            return f"{count / scale:,.1f} {unit}"
    return f"{count} bytes"


def _shape_of(model_type: str, config: dict[str, Any]) -> str:
    keys = ("channels", "hidden_units") if model_type == "cnn" else ("hidden_units",)
    parts = [f"{key} {list(config[key])}" for key in keys if config.get(key)]
    return ", ".join(parts) or "its config"


_SIZE_PARAMETERS = ("units", "n_layers", "kernel_size")


def _searches_size(spec: StudySpec) -> bool:
    """Whether the search space varies the model's size (else the model block sets it)."""
    return any(name in _SIZE_PARAMETERS or name.startswith("model.") for name in spec.search_space)
