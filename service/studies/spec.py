"""The study spec: what a client submits. Everything but `search_space` has a sensible default.

`StudySpec` builds on the trainer's `TrainingSpec` (model, search space, fixed values, loss,
EarlyStopping, ModelCheckpoint, diagnosis, seed: their types, bounds and defaults live there
once); this module adds what only a study has: its name, an uploaded data set, the objective's
direction, the Optuna sampler and pruner, the budget, the queue priority and warm start.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from service.queue.confirmation import DEFAULT_SEEDS, DEFAULT_TOP
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

TRIAL_MEASURES = ("n_parameters", "epoch_time_s")
"""What a trial costs rather than how well it fits, for a multi-objective study's later
objectives: the network's trainable parameters, and its seconds per epoch trained."""
ObjectiveMetric = Literal[
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "mae",
    "val_mae",
    "data_loss",
    "val_data_loss",
    "n_parameters",
    "epoch_time_s",
]
assert set(ObjectiveMetric.__args__) == {*EPOCH_METRICS, *TRIAL_MEASURES}  # type: ignore[attr-defined]

MAX_OBJECTIVES = 4


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

    metric: ObjectiveMetric = Field(
        default="val_data_loss",
        description="val_data_loss: the validation loss without the regularization penalty "
        "(Keras's val_loss includes it, so it grows with λ whatever the fit); in a "
        "multi-objective study the later objectives may also be n_parameters (the network's "
        "trainable parameters) or epoch_time_s (seconds per epoch)",
    )
    direction: Literal["minimize", "maximize"] | None = Field(
        default=None,
        description="default: minimize losses, parameters and time; maximize accuracies",
    )

    @property
    def resolved_direction(self) -> Literal["minimize", "maximize"]:
        if self.direction is not None:
            return self.direction
        if self.metric in TRIAL_MEASURES:
            return "minimize"
        return "minimize" if resolve_mode(self.metric, "auto") == "min" else "maximize"


class SamplerSpec(BaseModel):
    model_config = _STRICT

    name: Literal["tpe", "random", "grid", "cmaes", "qmc", "gp", "nsga2"] = Field(
        default="tpe", description="nsga2: Optuna's NSGA-II, for multi-objective studies"
    )
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


class ConfirmSpec(BaseModel):
    model_config = _STRICT

    top: int = Field(
        default=DEFAULT_TOP,
        ge=1,
        le=10,
        description="how many of the best configurations to retrain",
    )
    seeds: int = Field(
        default=DEFAULT_SEEDS, ge=1, le=10, description="how many more training seeds each gets"
    )


class StudySpec(TrainingSpec):
    """A study as submitted (JSON; the CLI also reads YAML)."""

    model_config = ConfigDict(extra="forbid", frozen=False)

    name: str = Field(min_length=1, max_length=200)
    dataset: DatasetConfig | UploadedDataset = Field(default_factory=DatasetConfig)
    search_space: SearchSpace
    objective: Annotated[
        Annotated[ObjectiveSpec, Tag("one")] | Annotated[list[ObjectiveSpec], Tag("list")],
        # a list is several objectives, anything else one: errors come from that member only
        Discriminator(lambda value: "list" if isinstance(value, list) else "one"),
    ] = Field(
        default_factory=ObjectiveSpec,
        description="one objective, or a list of up to 4 for a multi-objective study (Optuna "
        "keeps its Pareto front: GET /studies/{id}/pareto); the first is what the trainer "
        "reports each epoch, what the study's best trial and the CI gate go by",
    )
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    priority: int = Field(default=0, ge=-1000, le=1000, description="higher runs first")
    warm_start: WarmStartSpec | None = None
    confirm: ConfirmSpec | None = Field(
        default=None,
        description="end the search by retraining its best configurations with new seeds: the "
        "last top × seeds trials of n_trials repeat the `top` best distinct configurations "
        "(never pruned), and the study reports the configuration with the best mean "
        "(confirmed_best) beside its luckiest draw",
    )

    @property
    def objectives(self) -> list[ObjectiveSpec]:
        """Every objective, the first first."""
        return list(self.objective) if isinstance(self.objective, list) else [self.objective]

    @property
    def primary(self) -> ObjectiveSpec:
        """The first objective: the trainer's, the best trial's, the CI gate's."""
        return self.objectives[0]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def directions(self) -> list[Literal["minimize", "maximize"]]:
        return [objective.resolved_direction for objective in self.objectives]

    def _check_objectives(self) -> None:
        objectives = self.objectives
        path: tuple[str | int, ...] = ("objective",)
        if not 1 <= len(objectives) <= MAX_OBJECTIVES:
            raise SpecError(path, f"give 1 to {MAX_OBJECTIVES} objectives, not {len(objectives)}")
        first = (*path, 0) if isinstance(self.objective, list) else path
        if self.primary.metric not in EPOCH_METRICS:
            raise SpecError(
                (*first, "metric"),
                f"the first objective is what the trainer reports each epoch (for pruning and "
                f"the best epoch), one of {', '.join(EPOCH_METRICS)}; {self.primary.metric} "
                "may come after it",
            )
        seen: set[str] = set()
        for index, objective in enumerate(objectives):
            if objective.metric in seen:
                raise SpecError((*path, index, "metric"), f"{objective.metric} is listed twice")
            seen.add(objective.metric)
        if not self.multi_objective:
            return
        if self.confirm is not None:
            raise SpecError(
                ("confirm",),
                "confirm retrains a single-objective study's best configurations (a "
                "multi-objective study has a Pareto front, not one best)",
            )
        if self.sampler.name == "cmaes":
            raise SpecError(
                ("sampler", "name"),
                "cmaes optimizes one objective; a multi-objective study takes tpe, nsga2, gp, "
                "random, qmc or grid",
            )
        if self.warm_start is not None:
            raise SpecError(
                ("warm_start",), "warm start seeds a single-objective study (one best trial)"
            )
        if "pruner" not in self.model_fields_set:
            self.pruner = PrunerSpec(name="none")  # the default, where Optuna cannot prune
        elif self.pruner.name != "none":
            raise SpecError(
                ("pruner", "name"),
                "Optuna cannot prune a multi-objective study (a trial reports one value per "
                'epoch); use "none"',
            )

    @model_validator(mode="after")
    def _check_template(self) -> StudySpec:
        self._check_objectives()
        if self.warm_start is not None and self.sampler.name == "grid":
            raise SpecError(
                ("warm_start",),
                "the grid sampler runs every grid point whatever came before; warm start "
                "seeds tpe, gp, cmaes, qmc or random",
            )
        self._check_confirm()
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

    def _check_confirm(self) -> None:
        if self.confirm is None:
            return
        if self.sampler.name == "grid":
            raise SpecError(
                ("confirm",),
                "the grid sampler runs each grid point once; confirm retrains the best of a "
                "sampled search (tpe, gp, cmaes, qmc or random)",
            )
        confirmations = self.confirm.top * self.confirm.seeds
        if confirmations >= self.budget.n_trials:
            raise SpecError(
                ("confirm",),
                f"top × seeds = {confirmations} confirmation trials leave none of "
                f"budget.n_trials = {self.budget.n_trials} to search; raise n_trials above "
                f"{confirmations} or confirm fewer",
            )

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
            objective=self.primary.metric,
        )
