"""The arithmetic behind issue 14's key figure (`bench/search_quality.py`): epochs until the
default arm reaches random's best, within a trial budget or within random's compute."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "search_quality.py"


@pytest.fixture(scope="module")
def sq() -> ModuleType:
    spec = importlib.util.spec_from_file_location("search_quality", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["search_quality"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def run(
    sq: ModuleType, arm: str, index: int, values: list[float | None], epochs: list[int]
) -> object:
    best = min(v for v in values if v is not None)
    return sq.Run(
        arm=arm,
        seed=sq.SEED_BASE[arm] + index,
        values=values,
        epochs=epochs,
        best_value=best,
        best_test_accuracy=None,
        wall_s=1.0,
        test_accuracies=[None if v is None else 1.0 - v for v in values],
    )


def test_epochs_to_reach_counts_pruned_trials_and_honours_both_budgets(sq: ModuleType) -> None:
    mine = run(sq, "default", 0, [0.5, None, 0.3, 0.1], [10, 2, 10, 10])
    assert sq.epochs_to_reach(mine, 0.3) == 22  # the pruned trial's 2 epochs count
    assert sq.epochs_to_reach(mine, 0.1) == 32
    assert sq.epochs_to_reach(mine, 0.1, max_trials=3) is None
    assert sq.epochs_to_reach(mine, 0.1, max_epochs=31) is None
    assert sq.epochs_to_reach(mine, 0.1, max_epochs=32) == 32
    assert sq.epochs_to_reach(mine, 0.05) is None


def test_best_within_stops_at_the_epoch_budget(sq: ModuleType) -> None:
    mine = run(sq, "default", 0, [0.5, None, 0.3, 0.1], [10, 2, 10, 10])
    assert sq.best_within(mine, 22) == (0.3, pytest.approx(0.7), 3)
    assert sq.best_within(mine, 21) == (0.5, pytest.approx(0.5), 2)


def test_summary_leaves_out_same_seed_pairs_and_adds_equal_compute(sq: ModuleType) -> None:
    randoms = [
        run(sq, "random", 0, [0.4, 0.2], [10, 10]),  # 20 epochs, best 0.2
        run(sq, "random", 1, [0.3, 0.3], [20, 20]),  # 40 epochs, best 0.3
    ]
    defaults = [
        # more trials than random ran: within 2 trials it reaches neither best, within
        # random's epochs it reaches 0.3 (22 <= 40) and not 0.2 (0.2 needs 27 > 20)
        run(sq, "default", 0, [0.5, None, 0.3, 0.2], [10, 2, 10, 5]),
        run(sq, "default", 1, [0.1, 0.5, 0.5], [5, 5, 5]),
    ]
    out = sq.summary(randoms + defaults)
    # pairs (default 0, random 1) and (default 1, random 0) only
    assert out["pairs"] == 2
    assert out["never"] == 1  # default 0 in 2 trials never gets to 0.3
    assert out["ratio_median"] == pytest.approx(5 / 20)
    assert out["ratio_median_all_pairs"] == float("inf")  # of 5/20 and never
    assert out["equal_compute_pairs"] == 2
    assert out["equal_compute_never"] == 0
    assert out["equal_compute_ratio_min"] == pytest.approx(5 / 20)
    assert out["equal_compute_ratio_max"] == pytest.approx(22 / 40)
    assert out["equal_compute_ratio_median_all_pairs"] == pytest.approx((5 / 20 + 22 / 40) / 2)
