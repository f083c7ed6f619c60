"""Export a study's trials as one flat row each (CSV or JSON), ready for a data frame."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from service.db.repositories import ExportRow, StudyRepository, TrialRepository
from service.studies._reads import reading
from service.studies.errors import NotFoundError

_LEADING = ("number", "state", "value")
_TRAILING = ("epochs_run", "best_epoch", "diagnosis", "problems", "duration_s", "confirmation")


@dataclass(frozen=True)
class TrialTable:
    """Rows of flat values; `columns` is the union of their keys, in a stable order."""

    columns: tuple[str, ...]
    rows: tuple[dict[str, Any], ...]

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return buffer.getvalue()

    def to_records(self) -> list[dict[str, Any]]:
        """One object per row with every column (missing and non-finite values as null,
        which JSON has no other way to say)."""
        return [
            {column: _json_value(row.get(column)) for column in self.columns} for row in self.rows
        ]


def export_trials(session: Session, study_id: int) -> TrialTable:
    """Each trial's number, state, value, `param_<name>`s, final metrics (nested keys joined
    by `_`: `train_loss`, `val_accuracy`), epochs_run, best_epoch, diagnosis, problems (the
    training problems' labels, `;`-separated), duration_s, confirmation (spec.confirm)."""
    with reading(session):
        if not StudyRepository(session).exists(study_id):
            raise NotFoundError(f"no study has id {study_id}")
        trials = TrialRepository(session).export_rows(study_id)
    rows = tuple(_flat_row(trial) for trial in trials)
    params: dict[str, None] = {}
    metrics: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key.startswith("param_"):
                params[key] = None
            elif key not in _LEADING and key not in _TRAILING:
                metrics[key] = None
    return TrialTable((*_LEADING, *params, *metrics, *_TRAILING), rows)


def _flat_row(trial: ExportRow) -> dict[str, Any]:
    row: dict[str, Any] = {"number": trial.number, "state": trial.state, "value": trial.value}
    row.update(_flatten(trial.params, "param_"))
    for key, value in _flatten(trial.metrics or {}, "").items():
        clash = key in _LEADING or key in _TRAILING or key.startswith("param_")
        row[f"metric_{key}" if clash else key] = value
    row.update(
        epochs_run=trial.epochs_run,
        best_epoch=trial.best_epoch,
        diagnosis=trial.diagnosis,
        # the labels, `;`-separated (one cell in a CSV); the evidence is in the trial's detail
        problems=";".join(problem["label"] for problem in trial.problems or []),
        duration_s=trial.duration_s,
        confirmation=trial.confirmation,
    )
    return row


def _json_value(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _flatten(values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}_"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
