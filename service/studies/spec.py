"""The study spec: what a client submits. Everything but `search_space` has a sensible default.

`StudySpec` builds on the trainer's `TrainingSpec` (model, search space, fixed values, loss,
EarlyStopping, ModelCheckpoint, diagnosis, seed: their types, bounds and defaults live there
once); this module adds what only a study has: its name, an uploaded data set, the objective's
direction, the Optuna sampler and pruner, the budget, the queue priority and warm start.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trainer import (
    EPOCH_METRICS,
    FILE_DATASETS,
    CategoricalParam,
    DatasetConfig,
    IntParam,
    MaxEpochs,
    SearchSpace,
    Seed,
    SpecError,
    TrainingSpec,
    TrialTemplate,
    resolve_mode,
)

_STRICT = ConfigDict(extra="forbid")

Metric = Literal[
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "mae",
    "val_mae",
    "data_loss",
    "val_data_loss",
]
assert set(Metric.__args__) == set(EPOCH_METRICS)  # type: ignore[attr-defined]


MAX_GRID_POINTS = 100_000
"""Combinations a grid-sampler study may have (Optuna's GridSampler lists all of them)."""


class UploadedDataset(BaseModel):
    """A data set uploaded with `POST /datasets`, referred to by its id."""

    model_config = _STRICT

    id: int = Field(ge=1, le=2**63 - 1)
    validation_split: float = Field(default=0.2, gt=0.0, lt=1.0)
    test_split: float = Field(default=0.2, ge=0.0, lt=1.0)
    seed: Seed = 0
    standardize: bool = True
    standardize_target: bool = True
    folds: int | None = Field(default=None, ge=2, le=20)

    def resolved(self, path: str, file_format: str, target: str | None, task: str) -> DatasetConfig:
        """The trainer's dataset block for the stored file this reference names."""
        config: dict[str, Any] = {"path": path}
        if file_format == "csv":
            config["target"] = target
        return DatasetConfig(
            name=file_format,
            config=config,
            task=task,
            validation_split=self.validation_split,
            test_split=self.test_split,
            seed=self.seed,
            standardize=self.standardize,
            standardize_target=self.standardize_target,
            folds=self.folds,
        )


@functools.cache
def _unknown_task_stand_in() -> DatasetConfig:
    """Validates a spec whose uploaded data set is resolved later: its task is not known yet
    (submit checks it against the upload's, see `service.studies.submit`)."""
    return DatasetConfig(name="npz", config={"path": "uploaded"})


class ObjectiveSpec(BaseModel):
    model_config = _STRICT

    metric: Metric = Field(
        default="val_data_loss",
        description="val_data_loss: the validation loss without the regularization penalty "
        "(Keras's val_loss includes it, so it grows with λ whatever the fit)",
    )
    direction: Literal["minimize", "maximize"] | None = Field(
        default=None, description="default: minimize losses, maximize accuracies"
    )

    @property
    def resolved_direction(self) -> Literal["minimize", "maximize"]:
        if self.direction is not None:
            return self.direction
        return "minimize" if resolve_mode(self.metric, "auto") == "min" else "maximize"


class SamplerSpec(BaseModel):
    model_config = _STRICT

    name: Literal["tpe", "random", "grid", "cmaes", "qmc", "gp"] = "tpe"
    seed: Seed | None = None
    first_trial: Literal["keras_defaults", "sampled"] | None = Field(
        default=None,
        description="keras_defaults: the first trial runs the searched parameters at Keras's "
        "defaults where the space holds them (Adam at 1e-3, He for ReLU, no regularizer, ...); "
        "default: keras_defaults for tpe, gp and cmaes, sampled for random, qmc and grid",
    )

    @property
    def starts_from_defaults(self) -> bool:
        if self.first_trial is not None:
            return self.first_trial == "keras_defaults"
        return self.name in ("tpe", "gp", "cmaes")


class PrunerSpec(BaseModel):
    model_config = _STRICT

    name: Literal["median", "percentile", "successive_halving", "hyperband", "none"] = "median"
    n_startup_trials: int = Field(default=5, ge=0)
    n_warmup_steps: int = Field(default=2, ge=0)
    percentile: float = Field(default=25.0, gt=0.0, lt=100.0)


class BudgetSpec(BaseModel):
    model_config = _STRICT

    n_trials: int = Field(default=20, ge=1)
    max_epochs: MaxEpochs = Field(
        default=20, description="the trainer's ceiling; a server may allow fewer"
    )
    timeout_s: float | None = Field(
        default=None, gt=0, description="wall-clock budget; default: the server's max_timeout_s"
    )
    max_parallel_trials: int = Field(default=1, ge=1)


class WarmStartSpec(BaseModel):
    model_config = _STRICT

    studies: list[int] = Field(
        min_length=1,
        max_length=20,
        description="earlier studies of the same data, model and objective whose finished "
        "trials seed the sampler; their best configuration runs first",
    )


class StudySpec(TrainingSpec):
    """A study as submitted (JSON; the CLI also reads YAML)."""

    model_config = ConfigDict(extra="forbid", frozen=False)

    name: str = Field(min_length=1, max_length=200)
    dataset: DatasetConfig | UploadedDataset = Field(default_factory=DatasetConfig)
    search_space: SearchSpace
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    priority: int = Field(default=0, ge=-1000, le=1000, description="higher runs first")
    warm_start: WarmStartSpec | None = None

    @model_validator(mode="after")
    def _check_template(self) -> StudySpec:
        if self.warm_start is not None and self.sampler.name == "grid":
            raise SpecError(
                ("warm_start",),
                "the grid sampler runs every grid point whatever came before; warm start "
                "seeds tpe, gp, cmaes, qmc or random",
            )
        if isinstance(self.dataset, DatasetConfig) and self.dataset.name in FILE_DATASETS:
            # A path on the server's disk is not the client's to name.
            raise SpecError(
                ("dataset", "name"),
                f"a {self.dataset.name} file must be uploaded with POST /api/v1/datasets and "
                'referred to as {"dataset": {"id": ...}}',
            )
        if self.sampler.name == "grid":
            self.grid_values()
        # An uploaded data set is resolved later; a stand-in validates everything else now.
        stand_in = _unknown_task_stand_in() if isinstance(self.dataset, UploadedDataset) else None
        self.template(stand_in)
        return self

    def grid_values(self) -> dict[str, list[Any]]:
        """Every value of every parameter, for the grid sampler (ranges need a step).

        The grid's size is counted arithmetically first and capped (`MAX_GRID_POINTS`): a
        tiny step would otherwise build millions of values (Optuna's GridSampler also lists
        every combination) before anything could refuse it."""
        self._check_grid_size()
        values: dict[str, list[Any]] = {}
        for name in self.search_space:
            param = self.search_space[name]
            if isinstance(param, CategoricalParam):
                values[name] = list(param.choices)
            elif isinstance(param, IntParam):
                values[name] = list(range(param.low, param.high + 1, param.step))
            elif param.step is not None:
                count = round((param.high - param.low) / param.step) + 1
                values[name] = [param.low + i * param.step for i in range(count)]
            else:
                raise SpecError(
                    ("search_space", name),
                    "the grid sampler needs a step (or categorical choices) for every float "
                    "parameter",
                )
        return values

    def _check_grid_size(self) -> None:
        total = 1
        for name in self.search_space:
            param = self.search_space[name]
            if isinstance(param, CategoricalParam):
                count = len(param.choices)
            elif isinstance(param, IntParam):
                count = (param.high - param.low) // param.step + 1
            elif param.step is not None:
                count = round((param.high - param.low) / param.step) + 1
            else:
                continue  # grid_values says a step is needed
            total *= count
            if total > MAX_GRID_POINTS:
                raise SpecError(
                    ("search_space", name),
                    f"the grid has more than {MAX_GRID_POINTS:,} points by this parameter "
                    f"({count:,} values); use a larger step, fewer parameters, or another sampler",
                )

    def template(self, dataset: DatasetConfig | None = None) -> TrialTemplate:
        """The trainer's view of this study (`dataset` replaces an uploaded-data reference)."""
        if dataset is None:
            if isinstance(self.dataset, UploadedDataset):
                raise ValueError("an uploaded data set must be resolved to a file first")
            dataset = self.dataset
        return TrialTemplate(
            **self.training_fields(),
            dataset=dataset,
            max_epochs=self.budget.max_epochs,
            objective=self.objective.metric,
        )
