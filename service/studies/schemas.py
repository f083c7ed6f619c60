"""What the use cases return and the API serves: frozen value objects, never ORM rows.

One family per entity (`StudyRead` for lists, `StudyDetail` for one), and `Page[T]` for every
paginated list. Lists never carry blobs (a study's spec, a trial's epochs).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

T = TypeVar("T")

_FROZEN = ConfigDict(frozen=True, from_attributes=True)


class Page(BaseModel, Generic[T]):
    """One page of a list: `items` from `offset`, at most `limit` of them, of `total`."""

    model_config = ConfigDict(frozen=True)

    items: list[T]
    total: int = Field(description="items matching the filters, over all pages")
    limit: int
    offset: int


ProblemLabel = Literal[
    "not_learning", "vanishing_gradients", "exploding_gradients", "dead_units", "diverged"
]
"""The training problems a trial can show (`trainer.problems`)."""


def split_problem_labels(stored: str | None) -> list[str]:
    """`,a,b,` (how the trial row stores them) → ["a", "b"]."""
    return [label for label in (stored or "").split(",") if label]


class TrialRead(BaseModel):
    """A trial as listed: its parameters and results, without its learning curve."""

    model_config = _FROZEN

    id: int
    number: int
    state: str
    params: dict[str, Any]
    value: float | None
    objective_values: list[float | None] | None = Field(
        default=None,
        description="a multi-objective study's values, one per objective (value is the first)",
    )
    metrics: dict[str, Any] | None
    epochs_run: int
    best_epoch: int | None
    stopped_early: bool
    diagnosis: str | None
    device: str | None
    duration_s: float | None
    retry_of_id: int | None
    confirmation: bool = Field(
        default=False,
        description="a confirmation: it retrained one of the study's best configurations with "
        "its own seed (spec.confirm), never pruned",
    )
    started_at: datetime
    finished_at: datetime | None
    problem_labels: list[ProblemLabel] = Field(
        default_factory=list, description="the training problems found (details: the trial)"
    )

    @field_validator("problem_labels", mode="before")
    @classmethod
    def _split_labels(cls, value: Any) -> Any:
        return split_problem_labels(value) if isinstance(value, str) or value is None else value


class EpochRead(BaseModel):
    model_config = _FROZEN

    epoch: int
    loss: float | None
    accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    lr: float | None
    mae: float | None = None
    val_mae: float | None = None
    data_loss: float | None = None
    val_data_loss: float | None = None
    kernel_grad_norms: list[float] | None = Field(
        default=None, description="each kernel layer's gradient norm at the epoch's last step"
    )
    bias_grad_norms: list[float | None] | None = None
    dead_units: float | None = Field(
        default=None, description="fraction of ReLU units never active on the validation set"
    )


class ProblemRead(BaseModel):
    """A training problem found in a trial's epochs, with its evidence and a hint."""

    model_config = _FROZEN

    label: str
    epoch: int | None
    evidence: str
    hint: str


class TrialRef(BaseModel):
    """Another trial of the same study (e.g. the one a retry repeats)."""

    model_config = ConfigDict(frozen=True)

    id: int
    number: int


class TrialDetail(TrialRead):
    """Everything about one trial, with its per-epoch curve."""

    study_id: int
    optuna_trial_id: int | None
    best_metrics: dict[str, Any] | None
    diagnosis_detail: str | None
    error: str | None
    worker_id: int | None
    heartbeat_at: datetime | None
    has_checkpoint: bool = Field(description="a best checkpoint is recorded (GET .../checkpoint)")
    retry_of: TrialRef | None = Field(description="the trial this one retries")
    resumed_from_epoch: int | None = Field(
        description="the retried trial's checkpoint epoch this one went on from"
    )
    plugin_versions: dict[str, str] | None = Field(
        default=None,
        description="distribution → version of the installed plugins this trial used",
    )
    problems: list[ProblemRead] = Field(
        default_factory=list,
        description="training problems found: not_learning, vanishing_gradients, "
        "exploding_gradients, dead_units, diverged",
    )
    epochs: list[EpochRead]


class StudyRead(BaseModel):
    """A study as listed (its spec is in `StudyDetail`)."""

    model_config = _FROZEN

    id: int
    name: str
    status: str
    priority: int
    direction: Literal["minimize", "maximize"]
    objective_metric: str
    n_trials: int
    max_parallel_trials: int
    timeout_s: float | None
    cancel_requested: bool
    best_value: float | None
    optuna_study_name: str = Field(
        description="load it with optuna.load_study(study_name=..., storage=<database URL>)"
    )
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    warnings: list[str] = Field(
        default_factory=list,
        description="what the submit found questionable in the spec (it was queued anyway)",
    )


class ExtendRequest(BaseModel):
    """More trials for a study (`POST /studies/{id}/extend`)."""

    model_config = ConfigDict(extra="forbid")

    n_trials: int = Field(ge=1, le=1_000_000, description="trials to add to the study")


class ObjectiveRead(BaseModel):
    model_config = _FROZEN

    metric: str
    direction: Literal["minimize", "maximize"]


class ParetoFront(BaseModel):
    """A study's Pareto front: its complete trials that no other complete trial dominates (as
    good in every objective and better in one)."""

    model_config = _FROZEN

    objectives: list[ObjectiveRead]
    complete_trials: int = Field(description="the complete trials the front was taken from")
    trials: list[TrialRead] = Field(description="the non-dominated trials, by number")


class ConfirmedBest(BaseModel):
    """Of the configurations a study trained more than once, the one with the best mean value:
    what its search found, told apart from the luck of one training seed (spec.confirm)."""

    model_config = _FROZEN

    params: dict[str, Any]
    mean: float = Field(description="the mean objective value over its complete draws")
    stdev: float = Field(description="the sample standard deviation of those values")
    values: list[float] = Field(description="its complete draws' values, by trial number")
    trials: list[int] = Field(description="its complete draws' trial numbers")
    best_trial: int = Field(
        description="the number of its best draw (whose checkpoint holds trained weights)"
    )
    confirmations_mean: float | None = Field(
        default=None,
        description="the mean over its confirmations alone: free of the selection that put "
        "it among the best (its searched draw was picked for being good), so the fairer "
        "estimate of what it scores on a new seed; None before a confirmation completed",
    )
    diverged_left_out: int = Field(
        default=0,
        description="configurations left out because one of their draws diverged (the loss "
        "became non-finite): a mean over the seeds that trained would hide the ones that did not",
    )


class StudyDetail(StudyRead):
    """One study: its spec, its trials counted by state, and its best trial so far."""

    spec: dict[str, Any]
    trial_counts: dict[str, int] = Field(description="trials by state; every state is present")
    best_trial: TrialRead | None
    confirmed_best: ConfirmedBest | None = Field(
        default=None,
        description="a study with spec.confirm: the configuration with the best mean over two "
        "or more draws (None until one has them); best_trial is the luckiest single draw",
    )


class DatasetRead(BaseModel):
    model_config = _FROZEN

    id: int
    name: str
    format: Literal["csv", "npz"]
    size_bytes: int
    sha256: str
    target: str | None
    n_rows: int
    n_features: int
    n_classes: int | None = Field(description="None for a regression data set")
    task: Literal["classification", "regression"] = "classification"
    n_targets: int | None = Field(default=None, description="regression: target columns")
    created_at: datetime


class PluginRead(BaseModel):
    """An installed plugin as the server sees it (workers load the same allow-list)."""

    model_config = _FROZEN

    group: str = Field(description="entry-point group, e.g. hpsearch.models")
    kind: Literal["model", "dataset", "initializer", "regularizer"]
    name: str = Field(description="what a spec names")
    value: str = Field(description="the entry point's module:attribute")
    distribution: str | None
    version: str | None
    status: Literal["loaded", "not_allowed", "failed"]
    error: str | None = None
    description: str | None = None
    config_schema: dict[str, Any] | None = Field(
        default=None, description="JSON schema of the plugin's config (its config_schema)"
    )


class PluginList(BaseModel):
    model_config = ConfigDict(frozen=True)

    allow_list: list[str] | None = Field(
        description="HPS_PLUGINS as the server read it; null: every installed plugin is allowed"
    )
    plugins: list[PluginRead]


class WorkerRead(BaseModel):
    model_config = _FROZEN

    id: int
    host: str
    pid: int
    device: str
    status: str
    current_trial_id: int | None
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age_s: float = Field(description="seconds since the worker's last heartbeat")


class Health(BaseModel):
    model_config = ConfigDict(frozen=True)

    status: Literal["ok", "unavailable"]
    database: Literal["ok", "unreachable"]
    migrations: Literal["current", "missing", "behind", "ahead", "unknown"] = Field(
        description="the database's migration revision against this code's: current, missing "
        "(never migrated), behind (run hpsearch db upgrade), ahead (migrated by newer code), "
        "unknown (the database is unreachable)"
    )
    detail: str | None = Field(default=None, description="what is wrong and what to run")
