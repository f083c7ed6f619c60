"""Optuna's side of a trial: samplers and pruners from the spec, and the trainer's Reporter."""

from __future__ import annotations

import numpy
import optuna

from service.studies.spec import StudySpec
from service.worker.db_retry import with_db_retry


def make_sampler(spec: StudySpec, trial_number: int) -> optuna.samplers.BaseSampler:
    """The spec's sampler, seeded per trial so a study replays the same way from its history."""
    seed = None if spec.sampler.seed is None else trial_seed(spec.sampler.seed, trial_number)
    name = spec.sampler.name
    if name == "tpe":
        # Optuna 5's constant liar counts running trials as bad so parallel workers spread
        # out; it also re-reads the running trials from the database at every suggest (see
        # bench/README.md). One trial at a time has no one to spread out from.
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=False, constant_liar=spec.budget.max_parallel_trials > 1
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.GridSampler(spec.grid_values(), seed=seed)


def trial_seed(seed: int, trial_number: int) -> int:
    """The sampler's seed for one trial: a stream of its own for each (seed, trial). Not
    seed + trial, under which studies of neighbouring seeds (0, 1, 2: what users compare)
    replayed each other's trials one position apart."""
    return int(numpy.random.SeedSequence([seed, trial_number]).generate_state(1)[0])


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    pruner = spec.pruner
    if pruner.name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=pruner.n_startup_trials, n_warmup_steps=pruner.n_warmup_steps
        )
    if pruner.name == "percentile":
        return optuna.pruners.PercentilePruner(
            pruner.percentile,
            n_startup_trials=pruner.n_startup_trials,
            n_warmup_steps=pruner.n_warmup_steps,
        )
    if pruner.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if pruner.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=spec.budget.max_epochs)
    return optuna.pruners.NopPruner()


class OptunaReporter:
    """The trainer's Reporter over an Optuna trial: report(epoch, value) → trial.report.
    Both ride out a database restart (reporting the same step again is harmless)."""

    def __init__(self, trial: optuna.trial.Trial, prunes: bool, patience_s: float = 300.0) -> None:
        self.trial = trial
        self.prunes = prunes
        self.patience_s = patience_s

    def report(self, epoch: int, value: float) -> None:
        if self.prunes:  # without a pruner the intermediate values would only cost round trips
            with_db_retry(
                lambda: self.trial.report(value, epoch), "report", patience_s=self.patience_s
            )

    def should_prune(self) -> bool:
        return self.prunes and with_db_retry(
            self.trial.should_prune, "ask the pruner", patience_s=self.patience_s
        )
