"""The fit diagnosis: the bias/variance table of trainer/diagnosis.py and its thresholds."""

from __future__ import annotations

import pytest

from trainer.config import DiagnosisConfig
from trainer.diagnosis import Label, diagnose

DEFAULT = DiagnosisConfig()  # 5% train error, 5 points of gap
# Powers of two, so that val_error - train_error lands exactly on the threshold.
EXACT = DiagnosisConfig(max_train_error=0.125, max_generalization_gap=0.25)


@pytest.mark.parametrize(
    ("train_error", "val_error", "label"),
    [
        (0.01, 0.03, "good_fit"),  # low, low
        (0.01, 0.20, "overfitting"),  # low, much higher
        (0.20, 0.22, "underfitting"),  # high, about as high
        (0.20, 0.40, "underfitting_and_overfitting"),  # high, much higher
        (0.30, 0.10, "underfitting"),  # validation better than train: no variance problem
        (0.0, 0.0, "good_fit"),
    ],
)
def test_the_four_labels_of_the_table(train_error: float, val_error: float, label: Label) -> None:
    diagnosis = diagnose(train_error, val_error, None, DEFAULT)
    assert diagnosis.label == label


@pytest.mark.parametrize(
    ("train_error", "val_error", "label"),
    [
        (0.125, 0.125, "good_fit"),  # train error equal to the threshold is not high
        (0.125, 0.375, "good_fit"),  # gap equal to the threshold is not large
        (0.0, 0.25, "good_fit"),
        (0.125 + 1e-9, 0.125 + 1e-9, "underfitting"),
        (0.0, 0.25 + 1e-9, "overfitting"),
        (0.125 + 1e-9, 0.375 + 2e-9, "underfitting_and_overfitting"),
        (0.125, 0.375 + 1e-9, "overfitting"),
    ],
)
def test_thresholds_are_strict_at_the_boundary(
    train_error: float, val_error: float, label: Label
) -> None:
    assert diagnose(train_error, val_error, None, EXACT).label == label


@pytest.mark.parametrize(
    ("config", "label"),
    [
        (DiagnosisConfig(max_train_error=0.05, max_generalization_gap=0.05), "overfitting"),
        (DiagnosisConfig(max_train_error=0.05, max_generalization_gap=0.2), "good_fit"),
        (DiagnosisConfig(max_train_error=0.01, max_generalization_gap=0.2), "underfitting"),
        (
            DiagnosisConfig(max_train_error=0.01, max_generalization_gap=0.05),
            "underfitting_and_overfitting",
        ),
    ],
)
def test_thresholds_come_from_the_config(config: DiagnosisConfig, label: Label) -> None:
    assert diagnose(0.02, 0.12, None, config).label == label


def test_diagnosis_carries_the_errors_and_the_gap() -> None:
    diagnosis = diagnose(0.25, 0.625, 0.5, EXACT)
    assert diagnosis.label == "underfitting_and_overfitting"
    assert (diagnosis.train_error, diagnosis.val_error, diagnosis.test_error) == (0.25, 0.625, 0.5)
    assert diagnosis.gap == 0.375
    assert diagnose(0.25, 0.625, None, EXACT).test_error is None


def test_explanation_states_the_numbers_and_thresholds() -> None:
    text = diagnose(0.01, 0.2, None, DEFAULT).explanation
    assert "validation error is much higher" in text
    assert "train 1.0%" in text
    assert "validation 20.0%" in text
    assert "gap +19.0%" in text
    assert "thresholds: train error 5.0%, gap 5.0%" in text
