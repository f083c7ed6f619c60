"""`TrialTemplate`: the trainer's part of a study spec, and sampled values → `TrialConfig`.

A template holds what every trial of a study shares (dataset, model, EarlyStopping,
ModelCheckpoint, epochs) plus the search space and the `fixed` values. Parameter names form one
flat, Keras-worded namespace; `PARAMETERS` lists them. A value fixed or sampled for one name
lands in the right place of the config, e.g. `lambda` becomes the strength of whichever
regularizer was chosen (`l1=λ`, `l2=λ`, both for `l1_l2`, `factor=λ` for `orthogonal`).

Validation happens on construction, so a bad spec fails before any trial runs: unknown names,
values outside a parameter's domain, and search-space parameters that would be sampled where
they mean nothing (an optimizer's sub-parameter without a `when` limiting it to the optimizers
that take it, `lambda` where `none` may be chosen).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trainer import initializers, networks, optimizers, regularizers
from trainer._registry import Registry
from trainer.config import (
    IMAGE_AUGMENTATIONS,
    Activation,
    AugmentationConfig,
    BaseSeed,
    CheckpointConfig,
    DatasetConfig,
    DiagnosisConfig,
    EarlyStoppingConfig,
    FlipMode,
    MaxEpochs,
    ModelConfig,
    TrialConfig,
)
from trainer.losses import resolve_loss
from trainer.metrics import EPOCH_METRICS, VAL_DATA_LOSS, check_metric_for_task
from trainer.space import CategoricalParam, FloatParam, IntParam, SearchSpace
from trainer.spec_error import SpecError

Check = Callable[[Any], str | None]
"""Returns why a value is invalid, or None."""


def _number(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            return f"must be a number, got {value!r}"
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if too_low or too_high:
            return (
                f"must be in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
                f", got {value!r}"
            )
        return None

    return check


def _integer(low: int, high: int, *, power_of_two: bool = False, odd: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, got {value!r}"
        if not low <= value <= high:
            return f"must be between {low} and {high}, got {value}"
        if power_of_two and value & (value - 1):
            return f"must be a power of two, got {value}"
        if odd and value % 2 == 0:
            return f"must be odd, got {value}"
        return None

    return check


def _one_of(registry: Registry[Any], kind: str, *, none: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if none and value == "none":
            return None
        if value not in registry:  # canonical names, aliases and Keras class names, as `get`
            extra = ["none"] if none else []
            return f"unknown {kind} {value!r}; known: {', '.join(extra + registry.names())}"
        return None

    return check


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"must be true or false, got {value!r}"


def _fraction(value: Any) -> str | None:
    return _number(0.0, 1.0, high_open=True)(value)


@dataclass(frozen=True)
class Parameter:
    name: str
    check: Check
    description: str
    integer: bool = False
    """Only whole numbers (an int range, or integer choices)."""


PARAMETERS: dict[str, Parameter] = {
    p.name: p
    for p in [
        Parameter(
            "initializer",
            _one_of(initializers.registry, "initializer"),
            "kernel initializer of every Dense/Conv layer (Keras name)",
        ),
        Parameter(
            "bias_initializer",
            _one_of(initializers.registry, "initializer"),
            "bias initializer (default zeros)",
        ),
        Parameter("optimizer", _one_of(optimizers.registry, "optimizer"), "optimizer (Keras name)"),
        Parameter("learning_rate", _number(0.0, 10.0, low_open=True), "learning rate"),
        Parameter("momentum", _fraction, "momentum β (sgd, momentum, nesterov, rmsprop)"),
        Parameter("nesterov", _flag, "Nesterov momentum (sgd)"),
        Parameter("rho", _fraction, "RMSprop's discounting factor ρ"),
        Parameter("centered", _flag, "centered RMSprop"),
        Parameter("beta_1", _fraction, "Adam's first-moment decay β1"),
        Parameter("beta_2", _fraction, "Adam's second-moment decay β2"),
        Parameter("epsilon", _number(0.0, 1.0), "the optimizer's ε"),
        Parameter("amsgrad", _flag, "AMSGrad variant of Adam/AdamW"),
        Parameter("weight_decay", _number(0.0, 1.0), "AdamW's decoupled weight decay"),
        Parameter(
            "regularizer",
            _one_of(regularizers.registry, "regularizer", none=True),
            "kernel regularizer: none, l1, l2, l1_l2, orthogonal",
        ),
        Parameter("lambda", _number(0.0, 100.0), "strength λ of the kernel regularizer"),
        Parameter(
            "orthogonal_mode",
            lambda v: (
                None if v in ("rows", "columns") else f"must be 'rows' or 'columns', got {v!r}"
            ),
            "orthogonal regularizer's mode",
        ),
        Parameter(
            "bias_regularizer",
            _one_of(regularizers.registry, "regularizer", none=True),
            "bias regularizer",
        ),
        Parameter("bias_lambda", _number(0.0, 100.0), "strength of the bias regularizer"),
        Parameter(
            "activity_regularizer",
            _one_of(regularizers.registry, "regularizer", none=True),
            "activity regularizer on hidden layers' outputs",
        ),
        Parameter("activity_lambda", _number(0.0, 100.0), "strength of the activity regularizer"),
        Parameter("dropout", _fraction, "dropout rate after each hidden layer"),
        Parameter("gaussian_noise", _number(0.0, 100.0), "GaussianNoise stddev on training inputs"),
        Parameter(
            "random_flip",
            lambda v: (
                None
                if v in get_args(FlipMode)
                else f"must be one of {', '.join(map(repr, get_args(FlipMode)))}, got {v!r}"
            ),
            "RandomFlip of training images: none, horizontal, vertical, horizontal_and_vertical",
        ),
        Parameter(
            "random_translation", _number(0.0, 1.0), "RandomTranslation factor (height and width)"
        ),
        Parameter("random_rotation", _number(0.0, 1.0), "RandomRotation factor (fraction of 2π)"),
        Parameter("random_zoom", _fraction, "RandomZoom factor (height and width)"),
        Parameter(
            "batch_norm",
            _flag,
            "BatchNormalization after each hidden Dense/Conv, before its activation",
        ),
        Parameter(
            "batch_norm_momentum",
            _fraction,
            "BatchNormalization's momentum (Keras's: share of the old statistics kept, 0.99)",
        ),
        Parameter(
            "batch_norm_epsilon",
            _number(0.0, 1.0, low_open=True),
            "BatchNormalization's ε (Keras's default 1e-3)",
        ),
        Parameter(
            "batch_size",
            _integer(1, 65_536, power_of_two=True),
            "mini-batch size (a power of two)",
            integer=True,
        ),
        Parameter(
            "activation",
            lambda v: (
                None
                if v in get_args(Activation)
                else f"unknown activation {v!r}; known: {', '.join(get_args(Activation))}"
            ),
            "hidden layers' activation",
        ),
        Parameter("units", _integer(1, 65_536), "width of every hidden layer", integer=True),
        Parameter("n_layers", _integer(0, 64), "number of hidden layers", integer=True),
        Parameter("kernel_size", _integer(1, 15, odd=True), "CNN kernel size (odd)", integer=True),
    ]
}

MODEL_PARAMETER_PREFIX = "model."
"""`model.<key>` in the search space or `fixed` sets `model.config[key]` (a plugin's own
parameters: what its `config_schema` accepts)."""

_MODEL_SHAPE_PARAMETERS = (
    "dropout",
    "activation",
    "kernel_size",
    "batch_norm",
    "batch_norm_momentum",
    "batch_norm_epsilon",
)
"""Passed into `model.config` under their own name (for plugins, `units` and `n_layers` too;
the built-ins turn those into `hidden_units`)."""


def _spec_error_of(error: ValidationError) -> Exception:
    """The `SpecError` a validator raised inside pydantic's error (else the error itself)."""
    for detail in error.errors():
        cause = (detail.get("ctx") or {}).get("error")
        if isinstance(cause, SpecError):
            return cause
    return error


def _any_json(value: Any) -> str | None:
    if value is None or isinstance(value, bool | int | float | str):
        return None
    return f"must be a number, string, boolean or null, got {value!r}"


_STRENGTH_ARGS: dict[str, tuple[str, ...]] = {
    "l1": ("l1",),
    "l2": ("l2",),
    "l1_l2": ("l1", "l2"),
    "orthogonal": ("factor",),
}
REGULARIZATION_PARAMETERS = (
    "regularizer",
    "lambda",
    "orthogonal_mode",
    "bias_regularizer",
    "bias_lambda",
    "activity_regularizer",
    "activity_lambda",
)
"""The parameters that change the regularization penalty a trial's `loss` includes."""

_CONDITIONAL_ON = {
    "lambda": "regularizer",
    "bias_lambda": "bias_regularizer",
    "activity_lambda": "activity_regularizer",
    "orthogonal_mode": "regularizer",
    "batch_norm_momentum": "batch_norm",
    "batch_norm_epsilon": "batch_norm",
}


def optimizer_arguments(name: str) -> set[str]:
    """The keyword arguments an optimizer accepts (read from its class)."""
    target = optimizers.registry.get(name)
    return set(inspect.signature(type(target)).parameters) - {"self"}


class TrainingSpec(BaseModel):
    """The training part of a study as a user writes it, with its defaults, once: the
    trainer's `TrialTemplate` and the service's `StudySpec` (which adds the search's own
    parts: data reference, objective, sampler, pruner, budget) both build on it. The defaults
    are a study's (EarlyStopping with patience 3 that restores the best weights, the best
    checkpoint kept only when it improves); a `TrialConfig` states everything itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelConfig = ModelConfig()
    search_space: SearchSpace = Field(default_factory=lambda: SearchSpace({}))
    fixed: dict[str, Any] = Field(default_factory=dict)
    loss: str | None = Field(
        default=None,
        description="Keras loss: sparse_categorical_crossentropy (classification's default), "
        "mean_squared_error (regression's default), mean_absolute_error or huber",
    )
    early_stopping: EarlyStoppingConfig | None = Field(
        default_factory=lambda: EarlyStoppingConfig(patience=3, restore_best_weights=True)
    )
    checkpoint: CheckpointConfig = Field(
        default_factory=lambda: CheckpointConfig(save_best_only=True)
    )
    diagnosis: DiagnosisConfig = Field(default_factory=DiagnosisConfig)
    seed: BaseSeed = 0

    def training_fields(self) -> dict[str, Any]:
        """This spec's `TrainingSpec` fields, by name (to build another of the family)."""
        return {name: getattr(self, name) for name in TrainingSpec.model_fields}


class TrialTemplate(TrainingSpec):
    """What a study's trials share, its search space and fixed values."""

    dataset: DatasetConfig = DatasetConfig()
    max_epochs: MaxEpochs = 20
    objective: str = VAL_DATA_LOSS

    @model_validator(mode="after")
    def _check(self) -> TrialTemplate:
        for name, value in self.fixed.items():
            parameter = _parameter(name, "fixed")
            if name in self.search_space:
                raise SpecError(("fixed", name), f"{name!r} is also in the search space")
            if (why := parameter.check(value)) is not None:
                raise SpecError(("fixed", name), why)
        for name in self.search_space:
            _check_distribution(name, self.search_space[name])
        for name in self.search_space:
            self._check_applicable(name)
            if name.startswith(MODEL_PARAMETER_PREFIX):
                self._check_model_parameter(name)
        self._check_task()
        self._check_image_augmentation()
        try:
            self.config_for(self.search_space.sample(_FirstValues()))
        except SpecError as error:
            if error.path[:2] != ("model", "config"):
                raise
            # a sampled or fixed value the model's config refuses: said where it was set
            key = str(error.path[2]) if len(error.path) > 2 else ""
            for name in (f"{MODEL_PARAMETER_PREFIX}{key}", key):
                for block in ("fixed", "search_space"):
                    if name in getattr(self, block):
                        raise SpecError((block, name), error.reason) from None
            raise
        return self

    def _check_image_augmentation(self) -> None:
        """Flips, shifts, turns and zooms need image inputs: the model must take them."""
        kind = networks.input_kind(self.model.type)
        if kind == "image":
            return
        for block in ("fixed", "search_space"):
            for name in IMAGE_AUGMENTATIONS:
                if name in getattr(self, block):
                    raise SpecError(
                        (block, name),
                        f"{name} transforms images, but model {self.model.type!r} takes "
                        f"{kind} inputs (an image model such as 'cnn' takes "
                        "(channels, height, width))",
                    )

    def _check_model_parameter(self, name: str) -> None:
        """Each end of a range and each choice must be a value the model's config accepts."""
        param = self.search_space[name]
        values = (
            list(param.choices) if isinstance(param, CategoricalParam) else [param.low, param.high]
        )
        for value in values:
            try:
                self.model_for({name: value})
            except SpecError as error:
                raise SpecError(("search_space", name), error.reason) from None

    def _check_applicable(self, name: str) -> None:
        """A sampled parameter must mean something wherever it is active."""
        param = self.search_space[name]
        when = param.when or {}
        if name in optimizers_sub_parameters():
            for optimizer in self._possible("optimizer", when):
                if name != "learning_rate" and name not in optimizer_arguments(optimizer):
                    raise SpecError(
                        ("search_space", name),
                        f"optimizer {optimizer!r} takes no {name!r}; add "
                        f'"when": {{"optimizer": [...]}} naming the optimizers that do',
                    )
        parent = _CONDITIONAL_ON.get(name)
        if parent is not None:
            for value in self._possible(parent, when):
                if value is False:
                    raise SpecError(
                        ("search_space", name),
                        f"applies only when {parent} is true, but {parent} may be false; "
                        f'add "when": {{"{parent}": [true]}} or fix {parent} to true',
                    )
                if value in (None, "none"):
                    raise SpecError(
                        ("search_space", name),
                        f"applies only when a {parent} is chosen, but "
                        f'{parent} may be \'none\'; add "when": {{"{parent}": [...]}}',
                    )

    def _possible(self, name: str, when: Mapping[str, list[Any]]) -> list[Any]:
        """The values `name` can take while a parameter with condition `when` is active."""
        if name in when:
            return list(when[name])
        if name in self.search_space:
            param = self.search_space[name]
            return list(param.choices) if isinstance(param, CategoricalParam) else []
        if name in self.fixed:
            return [self.fixed[name]]
        if name in _MODEL_SHAPE_PARAMETERS and name in self.model.config:
            return [self.model.config[name]]  # set in the model's own config
        return [_DEFAULTS.get(name)]

    def _check_task(self) -> None:
        """Metrics and loss of the wrong task, where the dataset's task is known at submit."""
        task = self.dataset.declared_task()
        if task is None:
            return
        checks: list[tuple[tuple[str | int, ...], str, str]] = [
            (("objective", "metric"), self.objective, "objective")
        ]
        if self.early_stopping is not None:
            monitor = self.early_stopping.monitor
            checks.append((("early_stopping", "monitor"), monitor, "early_stopping.monitor"))
        checks.append((("checkpoint", "monitor"), self.checkpoint.monitor, "checkpoint.monitor"))
        try:
            for path, metric, what in checks:
                at = path
                if metric in EPOCH_METRICS:  # an unknown name is reported by TrialConfig
                    check_metric_for_task(metric, task, what)
            at = ("loss",)
            resolve_loss(self.loss, task)
        except ValueError as error:
            raise SpecError(at, str(error)) from None

    def model_for(self, values: Mapping[str, Any]) -> ModelConfig:
        """The model block with the sampled and fixed values that shape it."""
        model = self.model
        config = dict(model.config)
        if model.builtin and ("units" in values or "n_layers" in values):
            hidden = tuple(config.get("hidden_units", ()))
            depth = values.get("n_layers", len(hidden))
            width = values.get("units", hidden[0] if hidden else 128)
            config["hidden_units"] = (width,) * depth
        elif not model.builtin:
            config.update({k: values[k] for k in ("units", "n_layers") if k in values})
        config.update({name: values[name] for name in _MODEL_SHAPE_PARAMETERS if name in values})
        for name, value in values.items():
            if name.startswith(MODEL_PARAMETER_PREFIX):
                config[name.removeprefix(MODEL_PARAMETER_PREFIX)] = value
        if config == model.config:
            return model
        try:
            return ModelConfig(type=model.type, config=config)
        except ValidationError as error:
            raise _spec_error_of(error) from None

    def default_params(self) -> dict[str, Any]:
        """The searched parameters at the values a Keras user would start from (Adam at
        1e-3, He initialization for ReLU-family activations and Glorot otherwise, no
        regularizer, no dropout, batch 32, ...), where the space holds them; the others are
        left to the sampler. A study's first trial runs these, so the search begins from the
        usual baseline instead of a random corner."""
        values: dict[str, Any] = {}
        space = self.search_space
        for name in space.ordered_names():
            if not space.is_active(name, values):
                continue
            default = self._keras_default(name, values)
            if default is not None and _fits(space[name], default):
                values[name] = default
        return values

    def _keras_default(self, name: str, values: Mapping[str, Any]) -> Any:
        def current(key: str, fallback: Any) -> Any:
            return values.get(key, self.fixed.get(key, self.model.config.get(key, fallback)))

        if name == "initializer":
            return (
                "he_normal" if current("activation", "relu") in _RELU_FAMILY else "glorot_uniform"
            )
        if name == "learning_rate":
            return 0.01 if current("optimizer", "adam") in _SGD_FAMILY else 1e-3
        return KERAS_DEFAULTS.get(name)

    def config_for(self, params: Mapping[str, Any]) -> TrialConfig:
        """The `TrialConfig` for one trial's sampled `params` (plus the fixed values)."""
        values = {**self.fixed, **params}
        for name, value in params.items():
            if (why := _parameter(name, "params").check(value)) is not None:
                raise SpecError(("params", name), why)
        return TrialConfig(
            dataset=self.dataset,
            model=self.model_for(values),
            augmentation=AugmentationConfig.of(values),
            optimizer=_optimizer(values),
            kernel_initializer=values.get("initializer", "glorot_uniform"),
            bias_initializer=values.get("bias_initializer", "zeros"),
            kernel_regularizer=_regularizer(
                values.get("regularizer"), values.get("lambda"), values.get("orthogonal_mode")
            ),
            bias_regularizer=_regularizer(
                values.get("bias_regularizer"), values.get("bias_lambda")
            ),
            activity_regularizer=_regularizer(
                values.get("activity_regularizer"), values.get("activity_lambda")
            ),
            batch_size=values.get("batch_size", 32),
            max_epochs=self.max_epochs,
            seed=self.seed,
            objective=self.objective,
            loss=self.loss,
            early_stopping=self.early_stopping,
            checkpoint=self.checkpoint,
            diagnosis=self.diagnosis,
        )


_DEFAULTS: dict[str, Any] = {
    "optimizer": "adam",
    "regularizer": None,
    "bias_regularizer": None,
    "activity_regularizer": None,
    "batch_norm": False,
}


def optimizers_sub_parameters() -> set[str]:
    """Every optimizer keyword argument that is also a searchable parameter."""
    names: set[str] = set()
    for optimizer in optimizers.names():
        names |= optimizer_arguments(optimizer)
    return names & set(PARAMETERS)


def _parameter(name: str, where: str) -> Parameter:
    parameter = PARAMETERS.get(name)
    if parameter is None and name.startswith(MODEL_PARAMETER_PREFIX) and len(name) > 6:
        return Parameter(name, _any_json, "a parameter of the model's own config")
    if parameter is None:
        raise SpecError(
            (where, name),
            f"unknown parameter {name!r}; known: {', '.join(sorted(PARAMETERS))}, "
            f"or {MODEL_PARAMETER_PREFIX}<key> for a key of the model's config",
        )
    return parameter


def _check_distribution(name: str, param: CategoricalParam | IntParam | FloatParam) -> None:
    parameter = _parameter(name, "search_space")
    where: tuple[str | int, ...] = ("search_space", name)
    if isinstance(param, CategoricalParam):
        for index, choice in enumerate(param.choices):
            if (why := parameter.check(choice)) is not None:
                raise SpecError((*where, "choices", index), why)
        return
    if parameter.integer and isinstance(param, FloatParam):
        raise SpecError(where, f"{name!r} takes whole numbers; use an int range or choices")
    if name == "batch_size":
        raise SpecError(where, "use categorical choices of powers of two, e.g. [32, 64, 128]")
    for bound in ("low", "high"):
        if (why := parameter.check(getattr(param, bound))) is not None:
            raise SpecError((*where, bound), why)
    # Both bounds may be valid while values between are not (an odd-only kernel_size): the
    # second value of the grid shows whether the step keeps every value in the domain.
    if isinstance(param, IntParam) and param.low + param.step <= param.high:
        second = param.low + param.step
        if (why := parameter.check(second)) is not None:
            raise SpecError((*where, "step"), f"{param.low} + step {param.step} = {second}: {why}")


def _optimizer(values: Mapping[str, Any]) -> dict[str, Any]:
    name = values.get("optimizer", "adam")
    accepted = optimizer_arguments(name)
    config = {key: values[key] for key in accepted if key in values}
    return {"class_name": name, "config": config}


def _regularizer(name: Any, strength: Any, mode: Any = None) -> dict[str, Any] | None:
    if name in (None, "none"):
        return None
    config: dict[str, Any] = {}
    canonical = regularizers.registry.canonical_name(name)
    if strength is not None:
        args = _STRENGTH_ARGS.get(canonical) or getattr(
            regularizers.registry.get(name), "strength_args", None
        )
        if not args:
            raise ValueError(f"regularizer {name!r} has no strength to set from lambda")
        config = dict.fromkeys(args, strength)
    if mode is not None and canonical == "orthogonal":
        config["mode"] = mode
    return {"class_name": name, "config": config}


_RELU_FAMILY = ("relu", "elu", "selu", "leaky_relu", "gelu", "silu")
_SGD_FAMILY = ("sgd", "momentum", "nesterov")
KERAS_DEFAULTS: dict[str, Any] = {
    "optimizer": "adam",
    "regularizer": "none",
    "bias_regularizer": "none",
    "activity_regularizer": "none",
    "dropout": 0.0,
    "batch_size": 32,
    "momentum": 0.9,
    "nesterov": False,
    "rho": 0.9,
    "centered": False,
    "beta_1": 0.9,
    "beta_2": 0.999,
    "epsilon": 1e-7,
    "amsgrad": False,
    "weight_decay": 0.004,
    "batch_norm": False,
    "batch_norm_momentum": 0.99,
    "batch_norm_epsilon": 1e-3,
    "gaussian_noise": 0.0,
    "random_flip": "none",
    "random_translation": 0.0,
    "random_rotation": 0.0,
    "random_zoom": 0.0,
}
"""The values a Keras user starts from; `initializer` and `learning_rate` depend on the
activation and the optimizer (`TrialTemplate.default_params`)."""


def _fits(param: Any, value: Any) -> bool:
    """Whether `value` is one the search-space parameter can take."""
    if isinstance(param, CategoricalParam):
        return any(choice == value and type(choice) is type(value) for choice in param.choices)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if not param.low <= value <= param.high:
        return False
    if param.step is None:
        return True
    steps = (value - param.low) / param.step
    return math.isclose(steps, round(steps), abs_tol=1e-9)


class _FirstValues:
    """A Suggester giving each distribution's first value: one real config built at validation."""

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        return low

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        return low

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return choices[0]
