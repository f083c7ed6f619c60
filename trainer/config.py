"""`TrialConfig`: everything one trial needs, validated, frozen and JSON-serializable.

The parts (dataset, model, EarlyStopping, ModelCheckpoint, diagnosis) are also the blocks of a
study spec, so one set of classes validates both. Defaults are Keras's where Keras has one
(EarlyStopping patience 0, ModelCheckpoint save_best_only False, Dense glorot_uniform/zeros,
fit batch_size 32). Initializers, regularizers and the optimizer are kept in their serialized
Keras form, `{"class_name": ..., "config": {...}}`, resolved (and so checked) on construction.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass

from trainer import datasets, initializers, networks, optimizers, plugins, regularizers
from trainer.contracts import Task
from trainer.losses import canonical_loss
from trainer.metrics import EPOCH_METRICS, VAL_DATA_LOSS, VAL_LOSS, Mode, resolve_mode
from trainer.networks import Activation
from trainer.spec_error import SpecError

_FORBID = ConfigDict(extra="forbid")

SEED_MAX = 2**32 - 1
"""numpy's, scikit-learn's and Lightning's seeds are unsigned 32-bit integers."""
Seed = Annotated[int, Field(ge=0, le=SEED_MAX, description=f"0 to {SEED_MAX}")]
BASE_SEED_MAX = 2**31 - 1
"""A study's base seed: trial n trains with base + n, which stays within `SEED_MAX`."""
BaseSeed = Annotated[
    int, Field(ge=0, le=BASE_SEED_MAX, description="base seed; trial n trains with seed + n")
]
MaxEpochs = Annotated[int, Field(ge=1, le=100_000)]
"""The trainer's ceiling on a trial's epochs (a server may allow fewer)."""

Identifier = str | dict[str, Any]
"""A Keras identifier as given (a name or a `{"class_name", "config"}` dict); stored normalized
to the dict form."""

__all__ = ["Activation", "DataLoaderConfig", "DatasetConfig", "ModelConfig", "TrialConfig"]


def _check_monitor(monitor: str, mode: Mode) -> None:
    if monitor not in EPOCH_METRICS:
        raise ValueError(f"monitor must be one of {list(EPOCH_METRICS)}, got {monitor!r}")
    resolve_mode(monitor, mode)


_LEGACY_DATASET_KEYS = ("path", "target", "n_samples", "n_features", "n_classes")
_LEGACY_MODEL_KEYS = ("hidden_units", "activation", "dropout", "channels", "kernel_size")


def _resolved(
    data: Any,
    *,
    block: str,
    field: str,
    kind: str,
    default: str,
    legacy_keys: tuple[str, ...],
    registry: Any,
    validate: Any,
    extra: dict[str, Any] | None = None,
) -> Any:
    """A `{name-field, "config"}` block as given → its registered name and validated config.

    Wave 1's flat shape (`{"type": "cnn", "channels": [8]}`) moves into `config`, and an error
    in a key given that way is reported where the client wrote it (`model.channels`).
    """
    if not isinstance(data, dict):
        return data
    name = data.get(field, default)
    config = data.get("config", {})
    if not isinstance(name, str) or not isinstance(config, dict):
        return data  # pydantic reports the wrong type
    legacy = {key: data[key] for key in legacy_keys if key in data}
    both = sorted(set(legacy) & set(config))
    if both:
        raise SpecError((block, both[0]), f"{both[0]!r} is given both here and in 'config'")
    canonical = _known(registry, block, field, kind, name)
    merged = {**config, **legacy, **(extra or {})}
    try:
        checked: dict[str, Any] = validate(canonical, merged)
    except ValidationError as error:
        first = error.errors()[0]
        loc = tuple(part for part in first["loc"] if isinstance(part, str | int))
        at = (block, *loc) if loc and loc[0] in legacy else (block, "config", *loc)
        raise SpecError(at, f"{kind} {name!r}: {first['msg']}") from None
    try:
        json.dumps(checked)
    except (TypeError, ValueError):
        raise SpecError((block, "config"), f"{kind} {name!r}: config must be JSON") from None
    rest = {key: value for key, value in data.items() if key not in legacy_keys}
    return {**rest, field: canonical, "config": checked}


def _known(registry: Any, block: str, field: str, kind: str, name: str) -> str:
    if name in registry:
        canonical: str = registry.canonical_name(name)
        return canonical
    hint = plugins.why_unavailable(kind, name)
    message = f"unknown {kind} {name!r}; known: {', '.join(registry.names())}"
    raise SpecError((block, field), message if hint is None else f"{message} ({hint})")


class DataLoaderConfig(BaseModel):
    """How a dataset reaches the model: as device tensors (data that fits in memory) or
    streamed through a `torch.utils.data.DataLoader` (see `trainer.streaming`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    in_memory: bool | None = Field(
        default=None,
        description="None: arrays in memory, a loader's per-split Datasets streamed; True reads "
        "Datasets into memory once (fast when they fit), False streams arrays too",
    )
    num_workers: int = Field(default=0, ge=0, le=64, description="DataLoader worker processes")
    pin_memory: bool | None = Field(
        default=None, description="page-locked host batches; None: when training on a GPU"
    )
    eval_batch_size: int = Field(
        default=1024,
        ge=1,
        le=65_536,
        description="rows per batch when a streamed split is evaluated",
    )


class DatasetConfig(BaseModel):
    """Which registered dataset, its loader's config, and how it is split (fractions of all
    samples). Wave 1's flat fields (`path`, `target`, `n_samples`, ...) move into `config`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="digits", description="a registered dataset (built-in or plugin)")
    config: dict[str, Any] = Field(default_factory=dict, description="the loader's arguments")
    task: Task | None = Field(
        default=None, description="default: the loader's, else read from the targets' type"
    )
    validation_split: float = Field(default=0.2, gt=0.0, lt=1.0)
    test_split: float = Field(default=0.2, ge=0.0, lt=1.0)
    seed: Seed = 0
    standardize: bool = Field(default=True, description="z-score features, fitted on train only")
    standardize_target: bool = Field(
        default=True,
        description="regression: z-score targets with the train split's mean and std (losses "
        "and MAE are then in units of that std)",
    )
    folds: int | None = Field(
        default=None, ge=2, le=20, description="k-fold cross-validation over train+validation"
    )
    data_loader: DataLoaderConfig = Field(default_factory=DataLoaderConfig)

    if TYPE_CHECKING:  # wave 1's flat keywords (path=..., n_samples=...) are accepted too

        def __init__(self, **fields: Any) -> None: ...

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, data: Any) -> Any:
        extra = None
        if isinstance(data, dict) and data.get("name") == "synthetic":
            config = data.get("config")
            if not (isinstance(config, dict) and config.get("seed") is not None):
                # wave 1's synthetic data followed the split seed
                extra = {"seed": data.get("seed", 0)}
        return _resolved(
            data,
            block="dataset",
            field="name",
            kind="dataset",
            default="digits",
            legacy_keys=_LEGACY_DATASET_KEYS,
            registry=datasets.registry,
            validate=datasets.validated_config,
            extra=extra,
        )

    @model_validator(mode="after")
    def _check(self) -> DatasetConfig:
        if self.validation_split + self.test_split > 0.8:
            raise ValueError("validation_split + test_split must leave at least 20% for training")
        if self.folds is not None and self.data_loader.in_memory is False:
            raise ValueError("k-fold cross-validation trains in memory: drop data_loader.in_memory")
        return self

    @property
    def path(self) -> str | None:
        """The file a csv/npz dataset reads (None for the others)."""
        path = self.config.get("path") if self.name in datasets.FILE_DATASETS else None
        return None if path is None else str(path)

    def declared_task(self) -> Task | None:
        """The task as far as it is known without loading the data."""
        return self.task or datasets.declared_task(self.name, self.config)

    def __hash__(self) -> int:  # frozen, but its dict field would not hash
        return hash(self.model_dump_json())


class ModelConfig(BaseModel):
    """A registered model (the built-in `mlp`/`cnn`, or a plugin) and its builder's config.

    Wave 1's flat fields (`hidden_units`, `activation`, `dropout`, `channels`, `kernel_size`)
    move into `config`; see `trainer.networks.NetworkConfig` for the built-ins' layers.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(default="mlp", description="a registered model (built-in or plugin)")
    config: dict[str, Any] = Field(default_factory=dict, description="the builder's arguments")

    if TYPE_CHECKING:  # wave 1's flat keywords (hidden_units=..., dropout=...) are accepted too

        def __init__(self, **fields: Any) -> None: ...

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, data: Any) -> Any:
        return _resolved(
            data,
            block="model",
            field="type",
            kind="model",
            default="mlp",
            legacy_keys=_LEGACY_MODEL_KEYS,
            registry=networks.registry,
            validate=networks.validated_config,
        )

    @property
    def builtin(self) -> bool:
        return self.type in networks.BUILTIN

    def __hash__(self) -> int:  # frozen, but its dict field would not hash
        return hash(self.model_dump_json())


FlipMode = Literal["none", "horizontal", "vertical", "horizontal_and_vertical"]

IMAGE_AUGMENTATIONS = ("random_flip", "random_translation", "random_rotation", "random_zoom")
"""The augmentations that need image inputs `(channels, height, width)`."""


@dataclass(frozen=True, config=_FORBID)
class AugmentationConfig:
    """What a trial does to its training batches (the defaults do nothing)."""

    gaussian_noise: float = Field(default=0.0, ge=0.0, le=100.0, description="stddev")
    random_flip: FlipMode = "none"
    random_translation: float = Field(default=0.0, ge=0.0, le=1.0)
    random_rotation: float = Field(default=0.0, ge=0.0, le=1.0)
    random_zoom: float = Field(default=0.0, ge=0.0, lt=1.0)

    @property
    def active(self) -> bool:
        return self.gaussian_noise > 0 or self.geometric or self.random_flip != "none"

    @property
    def geometric(self) -> bool:
        return self.random_translation > 0 or self.random_rotation > 0 or self.random_zoom > 0

    @property
    def needs_images(self) -> bool:
        return self.geometric or self.random_flip != "none"

    @classmethod
    def of(cls, values: dict[str, Any]) -> AugmentationConfig:
        """The augmentation of a trial's parameter values (absent ones keep their defaults)."""
        names = ("gaussian_noise", *IMAGE_AUGMENTATIONS)
        return cls(**{name: values[name] for name in names if name in values})


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
    """Thresholds of the fit diagnosis, on the error of the task.

    Classification: error = 1 - accuracy. Regression: error = MSE / variance of the train
    targets (the fraction of variance left unexplained, 1 - R² against the train mean).
    underfitting (high bias): train error > `max_train_error`; overfitting (high variance):
    validation error - train error > `max_generalization_gap`. Unset thresholds take the
    task's defaults: 0.05 and 0.05 for classification, 0.3 and 0.1 for regression (a noisy
    target rarely allows less; set them for your data).
    """

    max_train_error: float | None = Field(default=None, ge=0.0, le=1.0)
    max_generalization_gap: float | None = Field(default=None, ge=0.0, le=1.0)
    # Training problems (`trainer.problems`):
    not_learning_epochs: int = Field(
        default=3, ge=2, description="epochs over which the training loss must fall"
    )
    not_learning_min_drop: float = Field(
        default=0.01,
        ge=0.0,
        lt=1.0,
        description="relative fall of the training loss below which it is not learning",
    )
    vanishing_ratio: float = Field(
        default=1e-3,
        gt=0.0,
        lt=1.0,
        description="first/last layer gradient norm ratio below which gradients vanish",
    )
    exploding_norm: float = Field(
        default=1e3, gt=0.0, description="a layer's gradient norm above which gradients explode"
    )
    max_dead_units: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="fraction of ReLU units never active on the validation set above which "
        "they are reported dead",
    )

    def thresholds(self, task: Task) -> tuple[float, float]:
        default_error, default_gap = _DIAGNOSIS_DEFAULTS[task]
        return (
            default_error if self.max_train_error is None else self.max_train_error,
            default_gap if self.max_generalization_gap is None else self.max_generalization_gap,
        )


_DIAGNOSIS_DEFAULTS: dict[Task, tuple[float, float]] = {
    "classification": (0.05, 0.05),
    "regression": (0.3, 0.1),
}


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
    max_epochs: MaxEpochs = 20
    seed: Seed = 0
    objective: str = Field(
        default=VAL_DATA_LOSS,
        description="metric reported for pruning each epoch; default: the validation loss "
        "without the regularization penalty",
    )
    loss: str | None = Field(
        default=None,
        description="Keras loss name; default: sparse_categorical_crossentropy for "
        "classification, mean_squared_error for regression",
    )
    early_stopping: EarlyStoppingConfig | None = None
    checkpoint: CheckpointConfig = CheckpointConfig()
    diagnosis: DiagnosisConfig = DiagnosisConfig()
    augmentation: AugmentationConfig = AugmentationConfig()

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

    @field_validator("loss")
    @classmethod
    def _normalize_loss(cls, value: str | None) -> str | None:
        return None if value is None else canonical_loss(value)

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
