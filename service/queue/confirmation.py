"""A study's confirmation stage: its last trials retrain its best configurations with new seeds.

A study's best trial is its luckiest draw: one configuration's validation loss varies between
training seeds by about as much as the search gains over random search (bench/README.md,
"Configurations, not draws"). A spec's `confirm: {"top": k, "seeds": s}` makes the last `k * s`
trial slots of the budget confirmations: each retrains one of the `k` best distinct
configurations found so far, with its own seed, never pruned. The study then reports, beside
its best draw, the configuration with the best mean over its draws (`confirmed_best` in
`service.studies.confirmed`).

Which configuration a confirmation slot retrains is decided in the claim's transaction, under
the study's lock, so workers claiming in parallel spread their confirmations over the
configurations instead of repeating one; and only once no searched trial is still running, so
the confirmations see the whole search.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from service.states import TrialState

CONFIRMATION_ATTR = "hpsearch_confirmation"
"""The user attribute that marks a confirmation's trial in Optuna's record (True)."""

DEFAULT_TOP = 3
DEFAULT_SEEDS = 2
"""`"confirm": {}`: the 3 best configurations, 2 more seeds each (what paid on the benchmarks)."""

Choice = dict[str, Any] | Literal["search", "wait"]
"""What a confirmation slot does: retrain this configuration; be searched as any other slot
(no searched trial finished, and none can still finish); or wait for a claim a moment later
(a searched trial still runs, and its result may change the top)."""


@dataclass(frozen=True)
class ConfirmPlan:
    """A spec's `confirm`: retrain the `top` best configurations with `seeds` more seeds each."""

    top: int
    seeds: int

    @property
    def trials(self) -> int:
        return self.top * self.seeds

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> ConfirmPlan | None:
        """The plan of a stored spec (validated at submission), None without one."""
        confirm = spec.get("confirm")
        if confirm is None:
            return None
        top, seeds = confirm.get("top", DEFAULT_TOP), confirm.get("seeds", DEFAULT_SEEDS)
        return cls(top=int(top), seeds=int(seeds))

    def is_confirmation_slot(self, slot: int, n_trials: int) -> bool:
        """Whether the study's `slot`-th trial slot (0-based; retries hold their original's
        slot) is one of the last `trials` of `n_trials` (extending a study moves the window)."""
        return slot >= n_trials - self.trials


@dataclass(frozen=True)
class Draw:
    """One trial of a study, as the choice of a confirmation sees it."""

    params: Mapping[str, Any]
    state: str
    value: float | None
    confirmation: bool
    retried: bool = False
    """Handed over, with a retry that holds its slot (the retry is counted, not it)."""
    diverged: bool = False
    """Failed because its loss became non-finite."""


def config_key(params: Mapping[str, Any]) -> str:
    """One configuration's identity: its parameters, in a canonical order."""
    return json.dumps(params, sort_keys=True, default=str)


def _finished_value(draw: Draw) -> float | None:
    if draw.state != TrialState.COMPLETE or draw.value is None or not math.isfinite(draw.value):
        return None
    return draw.value


def top_configurations(draws: Iterable[Draw], top: int, direction: str) -> list[dict[str, Any]]:
    """The `top` distinct configurations of the search's best finished draws, best first.
    Confirmations are left out (they repeat configurations, and must not promote one by its
    luck), and so is a configuration that diverged on a seed: the confirmed best leaves it
    out (`service.studies.confirmed`), so its seeds go to the next best."""
    draws = list(draws)
    unstable = {config_key(draw.params) for draw in draws if draw.diverged}
    searched = sorted(
        (
            (value, index, draw)
            for index, draw in enumerate(draws)
            if not draw.confirmation
            and (value := _finished_value(draw)) is not None
            and config_key(draw.params) not in unstable
        ),
        key=lambda item: (item[0] if direction == "minimize" else -item[0], item[1]),
    )
    chosen: dict[str, dict[str, Any]] = {}
    for _, _, draw in searched:
        chosen.setdefault(config_key(draw.params), dict(draw.params))
        if len(chosen) == top:
            break
    return list(chosen.values())


def confirmation_choice(draws: Iterable[Draw], top: int, direction: str) -> Choice:
    """What a confirmation slot does (`Choice`), from the study's finished trials, its
    confirmations and its running trials. Waiting for the search to finish matters where
    trials run in parallel: the last searched trials often hold the best draws."""
    draws = list(draws)
    if any(draw.state == TrialState.RUNNING and not draw.confirmation for draw in draws):
        return "wait"
    return next_confirmation(draws, top, direction) or "search"


def next_confirmation(draws: Iterable[Draw], top: int, direction: str) -> dict[str, Any] | None:
    """The configuration a new confirmation retrains: of the `top` best, the one with the
    fewest confirmations so far (finished, running or queued; the better on a tie), so that
    each gets its first extra seed before any gets a second, and each its `seeds` in the end
    (a configuration the sampler happened to draw twice gets as many as the others). A failed
    confirmation counts: it spent one of the configuration's seeds (one that diverged takes
    its configuration out of the top). None while no trial has finished."""
    draws = list(draws)
    candidates = top_configurations(draws, top, direction)
    if not candidates:
        return None
    counts = {config_key(params): 0 for params in candidates}
    for draw in draws:
        key = config_key(draw.params)
        if draw.confirmation and not draw.retried and key in counts:
            counts[key] += 1
    rank = {key: index for index, key in enumerate(counts)}
    chosen = min(counts, key=lambda key: (counts[key], rank[key]))
    return dict(candidates[rank[chosen]])
