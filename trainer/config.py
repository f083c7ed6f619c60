"""`TrialConfig`: everything one trial needs, validated, frozen and JSON-serializable.

The parts (dataset, model, EarlyStopping, ModelCheckpoint, diagnosis) are also the blocks of a
study spec, so one set of classes validates both. Defaults are Keras's where Keras has one
(EarlyStopping patience 0, ModelCheckpoint save_best_only False, Dense glorot_uniform/zeros,
fit batch_size 32). Initializers, regularizers and the optimizer are kept in their serialized
Keras form, `{"class_name": ..., "config": {...}}`, resolved (and so checked) on construction.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, TypeAdapter, field_validator, model_validator
from pydantic.dataclasses import dataclass

from trainer import initializers, optimizers, regularizers
from trainer.metrics import EPOCH_METRICS, VAL_LOSS, Mode, resolve_mode

_FORBID = ConfigDict(extra="forbid")

Identifier = str | dict[str, Any]
"""A Keras identifier as given (a name or a `{"class_name", "config"}` dict); stored normalized
to the dict form."""

Activation = Literal[
    "relu", "tanh", "sigmoid", "elu", "selu", "gelu", "leaky_relu", "silu", "linear"
]


def _check_monitor(monitor: str, mode: Mode) -> None:
    if monitor not in EPOCH_METRICS:
        raise ValueError(f"monitor must be one of {list(EPOCH_METRICS)}, got {monitor!r}")
    resolve_mode(monitor, mode)


@dataclass(frozen=True, config=_FORBID)
class DatasetConfig:
    """Where the data come from and how they are split (fractions of all samples)."""

    name: Literal["digits", "synthetic", "csv", "npz"] = "digits"
    path: str | None = Field(default=None, description="CSV or NPZ file (csv/npz only)")
    target: str | None = Field(default=None, description="CSV column holding the class label")
    validation_split: float = Field(default=0.2, gt=0.0, lt=1.0)
    test_split: float = Field(default=0.2, ge=0.0, lt=1.0)
    seed: int = 0
    standardize: bool = Field(default=True, description="z-score features, fitted on train only")
    folds: int | None = Field(
        default=None, ge=2, le=20, description="k-fold cross-validation over train+validation"
    )
    n_samples: int = Field(default=1000, ge=20, le=1_000_000, description="synthetic only")
    n_features: int = Field(default=20, ge=1, le=10_000, description="synthetic only")
    n_classes: int = Field(default=3, ge=2, le=1000, description="synthetic only")

    @model_validator(mode="after")
    def _check(self) -> DatasetConfig:
        if self.validation_split + self.test_split > 0.8:
            raise ValueError("validation_split + test_split must leave at least 20% for training")
        if self.name in ("csv", "npz") and not self.path:
            raise ValueError(f"dataset {self.name!r} needs a 'path'")
        if self.name in ("digits", "synthetic") and self.path:
            raise ValueError(f"dataset {self.name!r} takes no 'path'")
        if self.name == "csv" and not self.target:
            raise ValueError("a CSV dataset needs 'target', the name of its label column")
        return self


@dataclass(frozen=True, config=_FORBID)
class ModelConfig:
    """An MLP, or a small CNN for image inputs.

    MLP: Linear → activation → Dropout for each hidden layer, then a Linear output layer.
    CNN: [Conv2d(same padding) → activation → MaxPool2d(2)] per channel count (pooling only
    while the image is at least 2 pixels wide), flatten, Dropout, then the MLP head above on
    `hidden_units`. Dropout is never applied to the inputs or to the logits.
    """

    type: Literal["mlp", "cnn"] = "mlp"
    hidden_units: tuple[int, ...] = (128, 128)
    activation: Activation = "relu"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    channels: tuple[int, ...] = (16, 32)
    kernel_size: int = Field(default=3, ge=1, le=15)

    @field_validator("hidden_units", "channels")
    @classmethod
    def _positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(v < 1 or v > 65_536 for v in value):
            raise ValueError("layer sizes must be between 1 and 65536")
        return value

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.type == "cnn" and not self.channels:
            raise ValueError("a CNN needs at least one entry in 'channels'")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same padding), got {self.kernel_size}")
        return self


@dataclass(frozen=True, config=_FORBID)
class EarlyStoppingConfig:
    """Keras `EarlyStopping` arguments, with Keras's defaults and semantics."""

    monitor: str = VAL_LOSS
    min_delta: float = 0.0
    patience: int = Field(default=0, ge=0)
    mode: Mode = "auto"
    baseline: float | None = None
    restore_best_weights: bool = False
    start_from_epoch: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> EarlyStoppingConfig:
        _check_monitor(self.monitor, self.mode)
        return self


@dataclass(frozen=True, config=_FORBID)
class CheckpointConfig:
    """Keras `ModelCheckpoint` arguments, plus how often the resume checkpoint is written.

    The `best` file follows Keras: with `save_best_only` it is rewritten only when `monitor`
    improves; otherwise on every `save_freq` ('epoch' or every N optimizer steps). The separate
    `last` file holds the full training state so a trial can resume; it is written at the end of
    an epoch once `resume_every_s` seconds have passed since the previous one (0: every epoch),
    and always when training ends. Files are written at that same moment (the `best` file's
    content is held in memory until then): a killed trial loses at most `resume_every_s` of
    training, and tiny models do not spend their time writing files every epoch.
    """

    monitor: str = VAL_LOSS
    save_best_only: bool = False
    save_weights_only: bool = False
    mode: Mode = "auto"
    save_freq: Literal["epoch"] | int = "epoch"
    initial_value_threshold: float | None = None
    resume_every_s: float = Field(default=5.0, ge=0.0)

    @model_validator(mode="after")
    def _check(self) -> CheckpointConfig:
        _check_monitor(self.monitor, self.mode)
        if isinstance(self.save_freq, int) and self.save_freq < 1:
            raise ValueError(
                f"save_freq must be 'epoch' or a positive integer, got {self.save_freq}"
            )
        return self


@dataclass(frozen=True, config=_FORBID)
class DiagnosisConfig:
    """Thresholds of the fit diagnosis, on classification error (1 - accuracy).

    underfitting (high bias): train error > `max_train_error`; overfitting (high variance):
    validation error - train error > `max_generalization_gap`.
    """

    max_train_error: float = Field(default=0.05, ge=0.0, le=1.0)
    max_generalization_gap: float = Field(default=0.05, ge=0.0, le=1.0)


@dataclass(frozen=True, config=_FORBID)
class TrialConfig:
    """One trial, fully specified. Build it with `TrialTemplate.config_for` or directly."""

    dataset: DatasetConfig = DatasetConfig()
    model: ModelConfig = ModelConfig()
    # validate_default: defaults are normalized too, so TrialConfig() equals its round trip.
    optimizer: Identifier = Field(
        default_factory=lambda: {"class_name": "adam", "config": {}}, validate_default=True
    )
    kernel_initializer: Identifier = Field(
        default_factory=lambda: {"class_name": "glorot_uniform", "config": {}},
        validate_default=True,
    )
    bias_initializer: Identifier = Field(
        default_factory=lambda: {"class_name": "zeros", "config": {}}, validate_default=True
    )
    kernel_regularizer: Identifier | None = None
    bias_regularizer: Identifier | None = None
    activity_regularizer: Identifier | None = None
    batch_size: int = Field(default=32, ge=1, le=65_536)
    max_epochs: int = Field(default=20, ge=1, le=100_000)
    seed: int = 0
    objective: str = Field(default=VAL_LOSS, description="metric reported for pruning each epoch")
    early_stopping: EarlyStoppingConfig | None = None
    checkpoint: CheckpointConfig = CheckpointConfig()
    diagnosis: DiagnosisConfig = DiagnosisConfig()

    @field_validator("optimizer", mode="before")
    @classmethod
    def _normalize_optimizer(cls, value: Any) -> dict[str, Any]:
        return optimizers.serialize(optimizers.get(value))

    @field_validator("kernel_initializer", "bias_initializer", mode="before")
    @classmethod
    def _normalize_initializer(cls, value: Any) -> dict[str, Any]:
        return initializers.serialize(initializers.get(value))

    @field_validator(
        "kernel_regularizer", "bias_regularizer", "activity_regularizer", mode="before"
    )
    @classmethod
    def _normalize_regularizer(cls, value: Any) -> dict[str, Any] | None:
        regularizer = regularizers.get(value)
        return None if regularizer is None else regularizers.serialize(regularizer)

    @model_validator(mode="after")
    def _check(self) -> TrialConfig:
        if self.objective not in EPOCH_METRICS:
            raise ValueError(
                f"objective must be one of {list(EPOCH_METRICS)}, got {self.objective!r}"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict; `TrialConfig.from_dict` inverts it."""
        data: dict[str, Any] = _TRIAL_CONFIG_ADAPTER.dump_python(self, mode="json")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialConfig:
        return _TRIAL_CONFIG_ADAPTER.validate_python(data)


_TRIAL_CONFIG_ADAPTER: TypeAdapter[TrialConfig] = TypeAdapter(TrialConfig)
