"""Training problems: gradient norms and dead units per epoch, and the detectors over them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from torch import nn

from service.db.models import Trial, TrialEpoch
from tests.test_worker import add_study, run_worker_until_idle, sessions, spec
from trainer import TrialConfig, run_trial
from trainer.config import DatasetConfig, DiagnosisConfig, ModelConfig
from trainer.data import load_splits
from trainer.lit_module import TrialModule, _ActiveUnits
from trainer.problems import EpochSignals, detect_problems

__all__ = ["sessions"]

DATA = DatasetConfig(name="synthetic", n_samples=400, n_features=10, n_classes=4)


def trial(**changes: Any) -> TrialConfig:
    base: dict[str, Any] = {
        "dataset": DATA,
        "model": ModelConfig(type="mlp", config={"hidden_units": (32, 32)}),
        "max_epochs": 6,
    }
    return TrialConfig(**{**base, **changes})


def labels(config: TrialConfig) -> list[str]:
    return [problem.label for problem in run_trial(config, device="cpu").problems]


# --- the signals ------------------------------------------------------------------------


def test_the_gradient_norms_are_those_of_each_kernel_layers_kernel_and_bias() -> None:
    config = trial()
    data = load_splits(config.dataset)
    module = TrialModule(config.to_dict(), data.input_shape, data.n_classes)
    x, y = data.train.X[:16], data.train.y[:16]
    module.loss(module(x), y, None).backward()  # type: ignore[no-untyped-call]
    kernels, biases = module._gradient_norms()
    linears = [m for m in module.network.modules() if isinstance(m, nn.Linear)]
    assert len(kernels) == len(biases) == len(linears) == 3
    for layer, kernel, bias in zip(linears, kernels, biases, strict=True):
        assert layer.weight.grad is not None
        assert layer.bias.grad is not None
        assert kernel == pytest.approx(float(layer.weight.grad.norm()), rel=1e-5)
        assert bias == pytest.approx(float(layer.bias.grad.norm()), rel=1e-5)


def test_dead_units_count_the_relu_units_never_positive_on_any_row() -> None:
    first = nn.Linear(2, 4)
    network = nn.Sequential(first, nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        first.weight.zero_()
        first.bias.copy_(torch.tensor([1.0, -1.0, 2.0, -3.0]))  # two units never fire
    units = _ActiveUnits(network)
    for _ in range(3):
        units.next_batch()
        network(torch.randn(5, 2))
    assert units.close() == pytest.approx(0.5)
    assert not network[1]._forward_hooks  # the hooks are gone


def test_every_epoch_records_its_signals() -> None:
    result = run_trial(trial(max_epochs=3), device="cpu")
    for record in result.history:
        assert record.kernel_grad_norms is not None
        assert len(record.kernel_grad_norms) == 3
        assert all(math.isfinite(n) and n > 0 for n in record.kernel_grad_norms)
        assert record.bias_grad_norms is not None
        assert len(record.bias_grad_norms) == 3
        assert record.dead_units is not None
        assert 0.0 <= record.dead_units < 0.5


# --- the detectors on built cases ---------------------------------------------------------


def test_a_healthy_trial_has_no_problem() -> None:
    assert labels(trial()) == []


def test_zero_weights_do_not_learn_and_say_why() -> None:
    result = run_trial(trial(kernel_initializer="zeros"), device="cpu")
    found = {problem.label: problem for problem in result.problems}
    assert "not_learning" in found
    assert "zeros" in found["not_learning"].hint
    assert "fell" in found["not_learning"].evidence


def test_a_deep_sigmoid_net_with_tiny_weights_has_vanishing_gradients() -> None:
    deep = trial(
        model=ModelConfig(type="mlp", config={"hidden_units": (32,) * 8, "activation": "sigmoid"}),
        kernel_initializer={"class_name": "random_normal", "config": {"stddev": 0.01}},
    )
    result = run_trial(deep, device="cpu")
    [vanishing] = [p for p in result.problems if p.label == "vanishing_gradients"]
    assert "He/Glorot" in vanishing.hint
    assert "ratio" in vanishing.evidence
    norms = result.history[-1].kernel_grad_norms
    assert norms is not None
    assert norms[0] / norms[-1] < 1e-3


def test_a_huge_learning_rate_diverges_and_nothing_is_read_from_its_nan_epoch() -> None:
    huge = TrialConfig(
        model=ModelConfig(type="mlp", config={"hidden_units": (64, 64)}),
        optimizer={"class_name": "sgd", "config": {"learning_rate": 20.0}},
        max_epochs=4,
    )  # digits
    result = run_trial(huge, device="cpu")
    assert result.status == "diverged"
    assert [p.label for p in result.problems] == ["diverged"]  # not "dead units" from NaNs


def epochs(*norms: tuple[float, ...], loss: float = 1.0) -> list[EpochSignals]:
    return [EpochSignals(i + 1, loss, n) for i, n in enumerate(norms)]


def test_exploding_gradients_fire_above_the_threshold_once() -> None:
    found = detect_problems(epochs((5.0, 2.0), (2e3, 1.0), (3e3, 1.0)), DiagnosisConfig(), False)
    assert [(p.label, p.epoch) for p in found] == [("exploding_gradients", 2)]
    assert "2e+03 in layer 1 of 2" in found[0].evidence
    quiet = detect_problems(epochs((2e3, 1.0)), DiagnosisConfig(exploding_norm=1e4), False)
    assert quiet == []  # the threshold is the spec's


def test_not_learning_needs_the_model_to_underfit_too() -> None:
    flat = [EpochSignals(e, 0.5, None) for e in (1, 2, 3)]
    assert [p.label for p in detect_problems(flat, DiagnosisConfig(), underfits=True)] == [
        "not_learning"
    ]
    assert detect_problems(flat, DiagnosisConfig(), underfits=False) == []  # converged early


def test_the_thresholds_are_the_specs_diagnosis_block() -> None:
    signals = epochs((1e-4, 1.0), (1e-4, 1.0))
    assert [p.label for p in detect_problems(signals, DiagnosisConfig(), False)] == [
        "vanishing_gradients"
    ]
    assert detect_problems(signals, DiagnosisConfig(vanishing_ratio=1e-5), False) == []


# --- through the service ------------------------------------------------------------------


def test_a_worker_records_the_signals_per_epoch_and_the_problems_per_trial(
    migrated_database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    study_id = add_study(
        sessions,
        spec(fixed={"initializer": "zeros"}, budget={"n_trials": 1, "max_epochs": 4}),
    )
    run_worker_until_idle(migrated_database_url, tmp_path)
    with sessions() as session:
        stored = session.scalars(select(Trial).where(Trial.study_id == study_id)).one()
        rows = session.scalars(select(TrialEpoch).where(TrialEpoch.trial_id == stored.id)).all()
    assert stored.problems is not None
    assert "not_learning" in [problem["label"] for problem in stored.problems]
    assert {"label", "epoch", "evidence", "hint"} <= set(stored.problems[0])
    assert stored.problem_labels is not None
    assert ",not_learning," in stored.problem_labels  # what the trial list filters on
    assert len(rows) == 4
    assert all(
        row.kernel_grad_norms is not None and len(row.kernel_grad_norms) == 2 for row in rows
    )
    assert all(row.dead_units == 1.0 for row in rows)  # zero weights: no unit ever fires
