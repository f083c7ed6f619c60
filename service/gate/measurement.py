"""`Measurement`: a study's best configuration retrained with k seeds, and the baseline file.

A baseline file is a `Measurement` as JSON (format `hpsearch-baseline`, version 1). A candidate
is measured the same way, so the two compare like for like: the same objective, the same
training seeds, the values of each seed, and what could explain a difference (package
versions, the data fingerprint, the device).
"""

from __future__ import annotations

import math
import statistics
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from service.gate.errors import GateError

FORMAT: Final = "hpsearch-baseline"
VERSION: Final = 1
TRACKED_PACKAGES = ("torch", "lightning", "optuna", "hpsearch")

Direction = Literal["minimize", "maximize"]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class SeedRun(BaseModel):
    """One retraining of the best configuration with one training seed."""

    model_config = _FROZEN

    seed: int
    objective_value: float | None = Field(description="None when the run diverged")
    metrics: dict[str, float | None] = Field(
        default_factory=dict, description="train/val/test loss, accuracy and error"
    )
    status: str = "completed"
    objective_values: list[float] | None = Field(
        default=None,
        description="a multi-objective study's value per objective (the first is "
        "objective_value); None for a single objective, or a run without them all",
    )


class StudySource(BaseModel):
    """Where the measured configuration came from."""

    model_config = _FROZEN

    study_id: int | None = None
    study_name: str | None = None
    server: str | None = None
    best_trial_number: int | None = None
    study_best_value: float | None = Field(
        default=None, description="the search's own best value (biased low by selection)"
    )
    confirmed_mean: float | None = Field(
        default=None,
        description="a study with spec.confirm: the measured configuration's mean over its "
        "draws in the study (its confirmed best)",
    )


class Measurement(BaseModel):
    """What a baseline file holds, and what a candidate is compared as."""

    model_config = _FROZEN

    format: Literal["hpsearch-baseline"] = FORMAT
    version: Literal[1] = VERSION
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    source: StudySource = Field(default_factory=StudySource)
    objective_metric: str
    direction: Direction
    objectives: list[str] = Field(
        default_factory=list,
        description="a multi-objective study's objectives: the first is gated, the others "
        "reported (empty: one objective)",
    )
    best_params: dict[str, Any] = Field(default_factory=dict)
    trial_config: dict[str, Any] = Field(
        default_factory=dict, description="the retrained TrialConfig, seed aside"
    )
    runs: list[SeedRun] = Field(min_length=1)
    packages: dict[str, str] = Field(default_factory=dict)
    data_fingerprint: str
    device: str | None = None

    @field_validator("runs")
    @classmethod
    def _distinct_seeds(cls, runs: list[SeedRun]) -> list[SeedRun]:
        seeds = [run.seed for run in runs]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"every run needs its own seed, got {seeds}")
        return runs

    @property
    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]

    @property
    def objective_values(self) -> list[float]:
        """One value per seed; a diverged run counts as infinitely bad."""
        worst = math.inf if self.direction == "minimize" else -math.inf
        return [worst if run.objective_value is None else run.objective_value for run in self.runs]

    def reported_mean(self, index: int) -> float | None:
        """The mean over the seeds of objective `index` (of `objectives`), None without
        values."""
        values = [
            run.objective_values[index]
            for run in self.runs
            if run.objective_values is not None and len(run.objective_values) > index
        ]
        return statistics.fmean(values) if values else None

    @property
    def objective_value(self) -> float:
        """The mean over the seeds (what the gate compares)."""
        return statistics.fmean(self.objective_values)

    def metric_values(self, name: str) -> list[float]:
        """One value of a tracked metric per seed (NaN where a run lacks it)."""
        values = []
        for run in self.runs:
            value = run.metrics.get(name)
            values.append(math.nan if value is None else value)
        return values

    @property
    def metrics(self) -> dict[str, float]:
        """The mean of every metric the runs report."""
        names = sorted({name for run in self.runs for name in run.metrics})
        return {name: statistics.fmean(self.metric_values(name)) for name in names}


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that decide what training computes."""
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def save_baseline(measurement: Measurement, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(measurement.model_dump_json(indent=2) + "\n", encoding="utf-8")
    except OSError as error:
        raise GateError(f"cannot write {path}: {error.strerror}") from None


def load_baseline(path: Path) -> Measurement:
    """The baseline saved in `path`; a GateError saying what is wrong otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise GateError(f"cannot read the baseline {path}: {error.strerror}") from None
    try:
        return Measurement.model_validate_json(text)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or 'file'}: {item['msg']}"
            for item in error.errors()
        )
        raise GateError(f"{path} is not an hpsearch baseline (v{VERSION}): {problems}") from None
