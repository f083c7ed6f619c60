"""The technique report of a study: which technique helped on this data, how much, how sure.

For each searched parameter: its importance (Optuna's fANOVA, seeded, on the study's complete
trials), the objective by choice (categoricals) or by thirds of its range (numbers), and the
best group against each other one with a bootstrap 95 % interval of the difference in mean
objective, with how many trials back each figure. Sentences are generated from those figures
and never say more than they do: an interval that covers zero reads "not enough trials to
tell". Then the training problems by choice, the best configuration and, when the study's
first trial ran Keras's defaults, how the best compares with them.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import numpy
import optuna
from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Study, Trial, TrialState
from service.states import FINAL_STUDY_STATUSES
from service.studies._reads import reading
from service.studies.analysis import MAX_IMPORTANCE_TRIALS
from service.studies.browse import find_study
from service.studies.confirmed import Draw, confirmed_best
from service.studies.errors import ConflictError
from service.studies.schemas import ConfirmedBest, split_problem_labels
from service.studies.spec import StudySpec
from service.studies.warm_start import replayed
from trainer import CategoricalParam

BOOTSTRAP_RESAMPLES = 2000
EXACT_BOOTSTRAP_UP_TO = 2000
"""Groups of more trials get the normal approximation of the bootstrap (`_resampled_means`)."""
MIN_GROUP = 2
"""Trials a group needs before it is compared with another."""


class Group(BaseModel):
    label: str
    n: int
    mean: float
    median: float


class Comparison(BaseModel):
    better: str
    worse: str
    improvement: float
    """How much better the better group's mean objective is (always in the good direction)."""
    interval: tuple[float, float]
    n_better: int
    n_worse: int
    conclusive: bool


class ProblemCount(BaseModel):
    group: str
    label: str
    count: int
    of: int


class TechniqueReport(BaseModel):
    parameter: str
    kind: Literal["categorical", "numeric"]
    importance: float | None
    groups: list[Group]
    comparisons: list[Comparison]
    problems: list[ProblemCount]
    sentences: list[str]


class BestTrial(BaseModel):
    number: int
    value: float
    params: dict[str, Any]
    test_metrics: dict[str, float]
    diagnosis: str | None


class StudyReport(BaseModel):
    study_id: int
    name: str
    status: str
    objective_metric: str
    direction: Literal["minimize", "maximize"]
    n_trials: int
    """The finished searched trials (confirmations apart: `n_confirmations`)."""
    n_complete: int
    n_confirmations: int = 0
    """Finished trials that retrained one of the best configurations (spec.confirm)."""
    best: BestTrial | None
    confirmed_best: ConfirmedBest | None = None
    """spec.confirm: the configuration with the best mean over its draws (the best trial is
    the luckiest single draw)."""
    keras_defaults: str | None
    """How the best compares with the study's first trial, run at Keras's defaults."""
    importance_note: str | None
    techniques: list[TechniqueReport]
    summary: list[str]


class _Row:
    __slots__ = ("number", "params", "problems", "state", "value")

    def __init__(
        self, number: int, state: str, value: float | None, params: dict[str, Any], labels: str
    ) -> None:
        self.number, self.state, self.value, self.params = number, state, value, params
        self.problems = split_problem_labels(labels)


_ENDED_REPORTS: OrderedDict[tuple[int, datetime], StudyReport] = OrderedDict()
_ENDED_REPORTS_KEPT = 32
_ENDED_REPORTS_LOCK = threading.Lock()


def build_report(session: Session, study_id: int) -> StudyReport:
    """The study's technique report. An ended study's is computed once per process and kept
    (its trials no longer change; an extend or any other write to the study row moves its
    `updated_at`, so the next read computes it afresh): at 100,000 trials it takes seconds."""
    with reading(session):
        study = find_study(session, study_id)
        key = (study.id, study.updated_at)
        ended = study.status in FINAL_STUDY_STATUSES
        if ended:
            with _ENDED_REPORTS_LOCK:
                kept = _ENDED_REPORTS.get(key)
                if kept is not None:
                    _ENDED_REPORTS.move_to_end(key)
                    return kept
    report = _build_report(session, study_id)
    if ended:
        with _ENDED_REPORTS_LOCK:
            _ENDED_REPORTS[key] = report
            while len(_ENDED_REPORTS) > _ENDED_REPORTS_KEPT:
                _ENDED_REPORTS.popitem(last=False)
    return report


def _build_report(session: Session, study_id: int) -> StudyReport:
    with reading(session):
        study = find_study(session, study_id)
        rows: list[_Row] = []
        confirmations = 0
        draws: list[Draw] = []  # every complete trial with a value, for the confirmed best
        diverged: list[dict[str, Any]] = []
        for number, state, value, params, labels, confirmation in session.execute(
            select(
                Trial.number,
                Trial.state,
                Trial.value,
                Trial.params,
                Trial.problem_labels,
                Trial.confirmation,
            )
            .where(Trial.study_id == study_id, Trial.state != TrialState.RUNNING)
            .order_by(Trial.number)
        ):
            if state == TrialState.COMPLETE and value is not None:
                draws.append((number, params or {}, value, confirmation))
            elif state == TrialState.FAILED and "diverged" in split_problem_labels(labels):
                diverged.append(params or {})
            # confirmations repeat the best configurations: counted in the techniques' groups
            # they would weigh those configurations more than the search did
            if confirmation:
                confirmations += 1
            else:
                rows.append(_Row(number, state, value, params or {}, labels))
        best = _best(session, study)
    try:
        spec = StudySpec.model_validate(study.spec)
    except (ValidationError, ValueError) as error:
        raise ConflictError(
            f"study {study_id}'s spec is not one this server reads any more, so its "
            f"techniques cannot be reported: {error}"
        ) from None
    direction: Literal["minimize", "maximize"] = (
        "maximize" if study.direction == "maximize" else "minimize"
    )
    # (from the rows read above: `read_confirmed_best` would read them again)
    confirmed = (
        confirmed_best(draws, direction, diverged) if spec.confirm and confirmations else None
    )
    complete = [
        r
        for r in rows
        if r.state == TrialState.COMPLETE and r.value is not None and math.isfinite(r.value)
    ]
    importances, note = _importances(spec, complete, study_id, direction)
    metric = study.objective_metric
    techniques = [
        _technique(name, spec, rows, complete, importances.get(name), metric, direction)
        for name in spec.search_space
    ]
    report = StudyReport(
        study_id=study.id,
        name=study.name,
        status=study.status,
        objective_metric=metric,
        direction=direction,
        n_trials=len(rows),
        n_complete=len(complete),
        n_confirmations=confirmations,
        best=best,
        confirmed_best=confirmed,
        keras_defaults=_against_defaults(spec, complete, best, metric, direction),
        importance_note=note,
        techniques=techniques,
        summary=[],
    )
    report.summary = _summary(report)
    return report


def _best(session: Session, study: Study) -> BestTrial | None:
    if study.best_trial_id is None:
        return None
    trial = session.get(Trial, study.best_trial_id)
    if trial is None or trial.value is None:
        return None
    metrics = trial.metrics or {}
    tests = {
        key: float(value)
        for key, value in metrics.items()
        if key.startswith("test_") and isinstance(value, int | float)
    }
    return BestTrial(
        number=trial.number,
        value=trial.value,
        params=trial.params or {},
        test_metrics=tests,
        diagnosis=trial.diagnosis,
    )


def _importances(
    spec: StudySpec,
    complete: Sequence[_Row],
    study_id: int,
    direction: Literal["minimize", "maximize"],
) -> tuple[dict[str, float], str | None]:
    """fANOVA importances on the study's own complete searched trials (not a warm start's
    seeds, not confirmations), the latest `MAX_IMPORTANCE_TRIALS` of them, as the importances
    endpoint fits them."""
    frozen = [
        trial
        for row in complete[-MAX_IMPORTANCE_TRIALS:]
        if row.value is not None
        and (trial := replayed(spec.search_space, row.params, row.value, study_id, row.number))
        is not None
    ]
    if len(frozen) < 2:
        return {}, "importances need two complete trials"
    study = optuna.create_study(direction=direction)
    study.add_trials(frozen)
    try:
        found = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
        )
    except (RuntimeError, ValueError) as error:
        return {}, str(error)
    missing = [name for name in spec.search_space if name not in found]
    note = None
    if missing:
        note = (
            f"no importance for {', '.join(missing)}: a parameter must be in every complete "
            "trial (conditional ones are not)"
        )
    return dict(found), note


def _technique(
    name: str,
    spec: StudySpec,
    rows: Sequence[_Row],
    complete: Sequence[_Row],
    importance: float | None,
    metric: str,
    direction: str,
) -> TechniqueReport:
    param = spec.search_space[name]
    categorical = isinstance(param, CategoricalParam)
    values_by_group: dict[str, list[float]] = defaultdict(list)
    label_of = _choice_label if categorical else _range_labeller(name, complete)
    for row in complete:
        if name in row.params and row.value is not None:
            values_by_group[label_of(name, row.params[name])].append(row.value)
    groups = [
        Group(
            label=label,
            n=len(values),
            mean=float(numpy.mean(values)),
            median=float(numpy.median(values)),
        )
        for label, values in values_by_group.items()
    ]
    sign = -1.0 if direction == "minimize" else 1.0
    groups.sort(key=lambda g: -sign * g.mean)  # best first
    comparisons: list[Comparison] = []
    sentences: list[str] = []
    eligible = [g for g in groups if g.n >= MIN_GROUP]
    if len(eligible) >= 2:
        top = eligible[0]
        for other in eligible[1:]:
            comparison = _compare(
                top.label,
                other.label,
                values_by_group[top.label],
                values_by_group[other.label],
                sign,
            )
            comparisons.append(comparison)
            sentences.append(_sentence(comparison, metric))
    elif groups:
        sentences.append(
            f"{name}: not enough trials to compare (each group needs {MIN_GROUP} complete "
            f"trials; {', '.join(f'{g.label}: {g.n}' for g in groups)})"
        )
    problems = _problems_by_group(name, rows, label_of) if categorical else []
    sentences += [
        f"{p.count} of {p.of} {p.group} trials showed {p.label.replace('_', ' ')}" for p in problems
    ]
    return TechniqueReport(
        parameter=name,
        kind="categorical" if categorical else "numeric",
        importance=importance,
        groups=groups,
        comparisons=comparisons,
        problems=problems,
        sentences=sentences,
    )


def _choice_label(name: str, value: Any) -> str:
    return f"{name}={value}"


def _range_labeller(name: str, complete: Sequence[_Row]) -> Any:
    """Thirds of the values the complete trials took (by rank), as `name in [a, b]`."""
    values = sorted(
        float(r.params[name])
        for r in complete
        if isinstance(r.params.get(name), int | float) and not isinstance(r.params[name], bool)
    )
    if len(values) < 3:
        return lambda _name, value: f"{name}={value:.3g}"
    cuts = [values[len(values) // 3], values[2 * len(values) // 3]]
    bounds = [(values[0], cuts[0]), (cuts[0], cuts[1]), (cuts[1], values[-1])]

    def label(_name: str, value: Any) -> str:
        index = 0 if value < cuts[0] else 1 if value < cuts[1] else 2
        low, high = bounds[index]
        return f"{name} in [{low:.3g}, {high:.3g}]"

    return label


def _compare(
    better: str, worse: str, good: Sequence[float], bad: Sequence[float], sign: float
) -> Comparison:
    """The bootstrap (seeded) 95 % interval of mean(better) − mean(worse), in the good
    direction (`sign` −1 when minimizing)."""
    rng = numpy.random.default_rng(0)
    a, b = numpy.asarray(good, dtype=float), numpy.asarray(bad, dtype=float)
    differences = sign * (_resampled_means(rng, a) - _resampled_means(rng, b))
    low, high = (float(v) for v in numpy.percentile(differences, [2.5, 97.5]))
    return Comparison(
        better=better,
        worse=worse,
        improvement=float(sign * (a.mean() - b.mean())),
        interval=(low, high),
        n_better=len(a),
        n_worse=len(b),
        conclusive=low > 0,
    )


def _resampled_means(rng: numpy.random.Generator, values: numpy.ndarray) -> numpy.ndarray:
    """`BOOTSTRAP_RESAMPLES` bootstrap means of `values`. Up to `EXACT_BOOTSTRAP_UP_TO`
    values, resamples drawn (in chunks: a few MB, not one (2000, n) draw); beyond, the
    bootstrap distribution of the mean is the normal one (central limit theorem: mean and
    standard error of `values`, checked against the drawn one in the tests), drawn in
    O(resamples) instead of O(resamples × n): a 100,000-trial study's report took 3.7 s of
    draws."""
    if len(values) > EXACT_BOOTSTRAP_UP_TO:
        error = float(values.std()) / math.sqrt(len(values))
        return rng.normal(float(values.mean()), error, size=BOOTSTRAP_RESAMPLES)
    chunk = max(1, 2_000_000 // max(len(values), 1))
    means = [
        rng.choice(values, size=(min(chunk, BOOTSTRAP_RESAMPLES - start), len(values))).mean(axis=1)
        for start in range(0, BOOTSTRAP_RESAMPLES, chunk)
    ]
    return numpy.concatenate(means)


def _sentence(c: Comparison, metric: str) -> str:
    interval = f"95 % interval {c.interval[0]:.3g} to {c.interval[1]:.3g}"
    counts = f"{c.n_better} vs {c.n_worse} trials"
    if c.conclusive:
        return f"{c.better} beat {c.worse} by {c.improvement:.3g} {metric} ({interval}; {counts})"
    return (
        f"not enough trials to tell {c.better} from {c.worse}: the {interval} of the "
        f"difference in {metric} covers zero ({counts})"
    )


def _problems_by_group(name: str, rows: Sequence[_Row], label_of: Any) -> list[ProblemCount]:
    by_group: dict[str, list[_Row]] = defaultdict(list)
    for row in rows:
        if name in row.params:
            by_group[label_of(name, row.params[name])].append(row)
    counts: list[ProblemCount] = []
    for group, members in sorted(by_group.items()):
        labels: dict[str, int] = defaultdict(int)
        for row in members:
            for label in row.problems:
                labels[label] += 1
        counts += [
            ProblemCount(group=group, label=label, count=count, of=len(members))
            for label, count in sorted(labels.items())
        ]
    return counts


def _against_defaults(
    spec: StudySpec, complete: Sequence[_Row], best: BestTrial | None, metric: str, direction: str
) -> str | None:
    if best is None or spec.warm_start is not None or not spec.sampler.starts_from_defaults:
        return None
    first = next((r for r in complete if r.number == 0), None)
    if first is None or first.value is None:
        return None
    if best.number == 0:
        return f"Keras's defaults (trial 0, {metric} {first.value:.4g}) were not beaten"
    gain = (first.value - best.value) if direction == "minimize" else (best.value - first.value)
    return (
        f"the best trial ({best.number}, {metric} {best.value:.4g}) beat Keras's defaults "
        f"(trial 0, {first.value:.4g}) by {gain:.3g}"
    )


def _summary(report: StudyReport) -> list[str]:
    confirmations = (
        f" (and {report.n_confirmations} confirmations)" if report.n_confirmations else ""
    )
    lines = [
        f"study {report.study_id} '{report.name}' ({report.status}): {report.n_complete} of "
        f"{report.n_trials} finished trials complete{confirmations}; objective "
        f"{report.direction} {report.objective_metric}"
    ]
    ranked = sorted(
        (t for t in report.techniques if t.importance is not None),
        key=lambda t: -(t.importance or 0.0),
    )
    if ranked:
        lines.append(
            "most important: "
            + ", ".join(f"{t.parameter} ({t.importance:.0%})" for t in ranked[:3])
        )
    lines += [
        sentence
        for technique in report.techniques
        for comparison, sentence in zip(technique.comparisons, technique.sentences, strict=False)
        if comparison.conclusive
    ]
    if report.keras_defaults is not None:
        lines.append(report.keras_defaults)
    confirmed = report.confirmed_best
    if confirmed is not None:
        lines.append(_confirmed_sentence(confirmed, report.best, report.objective_metric))
    return lines


def _confirmed_sentence(confirmed: ConfirmedBest, best: BestTrial | None, metric: str) -> str:
    trials = ", ".join(str(number) for number in confirmed.trials)
    sentence = (
        f"confirmed best: trials {trials} trained one configuration with {len(confirmed.trials)} "
        f"seeds, {metric} {confirmed.mean:.4g} ± {confirmed.stdev:.2g} on average"
    )
    if confirmed.confirmations_mean is not None:
        sentence += f" ({confirmed.confirmations_mean:.4g} over its confirmations alone)"
    if confirmed.diverged_left_out:
        sentence += (
            f"; {confirmed.diverged_left_out} configuration(s) that diverged on one of their "
            "seeds were left out"
        )
    if best is not None and best.number not in confirmed.trials:
        sentence += (
            f"; the best single draw (trial {best.number}, {best.value:.4g}) was another "
            "configuration's, a lucky seed more than a better configuration"
        )
    return sentence
