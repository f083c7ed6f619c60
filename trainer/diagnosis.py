"""The fit diagnosis: the bias/variance table every deep-learning course draws.

| train error | validation error | diagnosis                                      |
|-------------|------------------|------------------------------------------------|
| low         | low (small gap)  | good_fit                                       |
| low         | high (large gap) | overfitting (high variance)                    |
| high        | about as high    | underfitting (high bias)                       |
| high        | much higher      | underfitting_and_overfitting (bias + variance) |

"High" train error means above `DiagnosisConfig.max_train_error`; a large gap means validation
error minus train error above `max_generalization_gap`. Errors are of the final model, measured
in inference mode (no dropout): classification error rates (1 - accuracy), or for regression
the MSE divided by the train targets' variance (the fraction of variance left unexplained,
1 - R²; 1.0 is no better than predicting the train mean).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from trainer.config import DiagnosisConfig
from trainer.contracts import Task

Label = Literal["good_fit", "overfitting", "underfitting", "underfitting_and_overfitting"]


@dataclass(frozen=True)
class Diagnosis:
    label: Label
    train_error: float
    val_error: float
    test_error: float | None
    gap: float
    explanation: str


def diagnose(
    train_error: float,
    val_error: float,
    test_error: float | None,
    config: DiagnosisConfig,
    task: Task = "classification",
) -> Diagnosis:
    max_train_error, max_gap = config.thresholds(task)
    gap = val_error - train_error
    high_bias = train_error > max_train_error
    high_variance = gap > max_gap
    label: Label
    if high_bias and high_variance:
        label = "underfitting_and_overfitting"
        why = "train error is high and validation error is much higher"
    elif high_bias:
        label = "underfitting"
        why = "train error is high: the model does not fit the training data"
    elif high_variance:
        label = "overfitting"
        why = "train error is low but validation error is much higher"
    else:
        label = "good_fit"
        why = "train error is low and validation error is close to it"
    measure = "" if task == "classification" else "unexplained variance: "
    explanation = (
        f"{why} ({measure}train {train_error:.1%}, validation {val_error:.1%}, gap {gap:+.1%}; "
        f"thresholds: train error {max_train_error:.1%}, gap {max_gap:.1%})"
    )
    return Diagnosis(label, train_error, val_error, test_error, gap, explanation)
