"""Optimizers with Keras 3's names, defaults and update equations, built on torch.optim.

A torch optimizer needs the parameters, so an optimizer here is a config-carrying factory:
``get("adam").build(model.parameters())`` returns a ``torch.optim.Optimizer``.

Decision: match Keras exactly (same iterates for the same gradients, up to rounding), for a
constant learning rate. With ``g`` the gradient, ``t`` the step (1 on the first), ``lr`` the
learning rate, every state starting at 0:

- ``sgd``/``momentum``/``nesterov``: Keras ``v = m*v - lr*g; w += v`` (nesterov:
  ``w += m*v - lr*g``; ``m = 0``: ``w -= lr*g``). ``torch.optim.SGD`` (dampening 0) keeps
  ``b = m*b + g; w -= lr*b`` (nesterov: ``w -= lr*(g + m*b)``), the same iterates with
  ``v = -lr*b``, so it is used as is.
- ``rmsprop``: ``v = rho*v + (1-rho)*g**2``; centered: ``a = rho*a + (1-rho)*g`` and
  ``d = v - a**2``, else ``d = v``; ``inc = lr*g / sqrt(d + eps)`` (eps *inside* the root);
  with momentum ``mu > 0``: ``s = mu*s + inc; w -= s``, else ``w -= inc``.
  ``torch.optim.RMSprop`` adds eps outside the root, so `KerasRMSprop` implements this.
- ``adam``: ``m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g**2`` (amsgrad: ``v <- max(v_max, v)``);
  ``w -= alpha*m / (sqrt(v) + eps)`` with ``alpha = lr*sqrt(1-b2**t)/(1-b1**t)``, eps added to
  the *uncorrected* ``sqrt(v)``. ``torch.optim.Adam`` computes ``lr/(1-b1**t) * m /
  (sqrt(v/(1-b2**t)) + eps_t)``, which is the same iterate when ``eps_t = eps/sqrt(1-b2**t)``:
  `KerasAdam` sets that before each torch step (foreach and fused kernels still run).
- ``adamw``: Keras first decays ``w *= 1 - lr*wd`` (decoupled, ``BaseOptimizer``'s
  ``_apply_weight_decay``), then takes the Adam step; ``torch.optim.AdamW`` does the same, so
  `KerasAdamW` is AdamW with the same eps correction.

The epsilon trick assumes the parameters of a group step together (each gets a gradient at every
step, the usual case): torch counts steps per parameter, Keras per optimizer.

The classic "EMA" momentum ``V = beta*V + (1-beta)*dW; W -= alpha*V`` is classical momentum:
``V = (1-beta)*b``, so it is ``momentum`` with ``learning_rate = alpha*(1-beta)`` and
``momentum = beta``.

A custom optimizer: subclass `Optimizer` (``build`` and ``get_config``) and decorate it with
``@register("name")``.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Self

import torch
from torch.optim.optimizer import ParamsT

from trainer._registry import Registry

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "KerasAdam",
    "KerasAdamW",
    "KerasRMSprop",
    "Momentum",
    "Nesterov",
    "Optimizer",
    "RMSprop",
    "deserialize",
    "get",
    "keras_adam_epsilon",
    "names",
    "register",
    "registry",
    "serialize",
]


def keras_adam_epsilon(epsilon: float, beta_2: float, done: int | float) -> float:
    """The torch Adam ``eps`` that gives Keras's iterate (module docstring) for the step after
    `done` steps: ``epsilon / sqrt(1 - beta_2**(done + 1))``."""
    return epsilon / math.sqrt(1.0 - beta_2 ** (done + 1))


class _KerasEpsilon(torch.optim.Optimizer):
    """Makes a torch Adam's ``eps`` Keras's: added to the uncorrected ``sqrt(v)``."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self.param_groups[-1].setdefault("keras_eps", self.param_groups[-1]["eps"])

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        for group in self.param_groups:
            stepping = [p for p in group["params"] if p.grad is not None]
            if not stepping:
                continue
            state = self.state.get(stepping[0])
            done = int(state["step"]) if state and "step" in state else 0
            group["eps"] = keras_adam_epsilon(group["keras_eps"], float(group["betas"][1]), done)
        loss: float | None = super().step(closure)
        return loss


class KerasAdam(_KerasEpsilon, torch.optim.Adam):
    """``torch.optim.Adam`` whose ``eps`` is Keras's epsilon (module docstring)."""


class KerasAdamW(_KerasEpsilon, torch.optim.AdamW):
    """``torch.optim.AdamW`` whose ``eps`` is Keras's epsilon (module docstring)."""


class KerasRMSprop(torch.optim.Optimizer):
    """Keras's RMSprop: ``lr*g / sqrt(v + eps)`` (see the module docstring).

    ``torch.optim.RMSprop`` divides by ``sqrt(v) + eps`` instead, and no per-step change of eps
    turns one into the other (the gap depends on each element's v), so the update is written
    here with foreach kernels, as Keras's torch backend does.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        rho: float = 0.9,
        momentum: float = 0.0,
        eps: float = 1e-7,
        centered: bool = False,
    ) -> None:
        defaults = {"lr": lr, "rho": rho, "momentum": momentum, "eps": eps, "centered": centered}
        super().__init__(params, defaults)

    def _buffers(self, params: list[torch.Tensor], name: str) -> list[torch.Tensor]:
        states = [self.state[p] for p in params]
        for p, state in zip(params, states, strict=True):
            if name not in state:
                state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return [state[name] for state in states]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if any(g.is_sparse for g in grads):
                raise RuntimeError("KerasRMSprop does not support sparse gradients")
            lr, rho, momentum, eps = group["lr"], group["rho"], group["momentum"], group["eps"]
            velocities = self._buffers(params, "velocity")
            torch._foreach_mul_(velocities, rho)
            torch._foreach_addcmul_(velocities, grads, grads, value=1.0 - rho)
            if group["centered"]:
                averages = self._buffers(params, "average_gradient")
                torch._foreach_mul_(averages, rho)
                torch._foreach_add_(averages, grads, alpha=1.0 - rho)
                denominators = torch._foreach_addcmul(velocities, averages, averages, value=-1.0)
                torch._foreach_add_(denominators, eps)
            else:
                denominators = torch._foreach_add(velocities, eps)
            torch._foreach_sqrt_(denominators)
            if momentum > 0:
                buffers = self._buffers(params, "momentum")
                torch._foreach_mul_(buffers, momentum)
                torch._foreach_addcdiv_(buffers, grads, denominators, value=lr)
                torch._foreach_sub_(params, buffers)
            else:
                torch._foreach_addcdiv_(params, grads, denominators, value=-lr)
        return loss


def _check(
    name: str, value: object, low: float, high: float = math.inf, *, strict: bool = False
) -> float:
    """``value`` as a float if it is a finite number with ``low <= value < high`` (or ``low <``)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not (low < value if strict else low <= value)
        or not value < high
    ):
        bounds = f"{'(' if strict else '['}{low}, {high})"
        raise ValueError(f"{name} must be a finite number in {bounds}, got {name}={value!r}")
    return float(value)


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {name}={value!r}")
    return value


class Optimizer(abc.ABC):
    """A factory of torch optimizers carrying a Keras-style config.

    Calling it is `build`, so `get` also passes an instance through unchanged.
    """

    learning_rate: float

    @abc.abstractmethod
    def build(self, params: ParamsT) -> torch.optim.Optimizer:
        """A torch optimizer over `params` (parameters or torch param groups)."""

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-serializable (what `serialize` writes)."""
        if dataclasses.is_dataclass(self):
            return dataclasses.asdict(self)
        raise NotImplementedError(f"{type(self).__name__} does not implement get_config()")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        return cls(**config)

    def __call__(self, params: ParamsT) -> torch.optim.Optimizer:
        return self.build(params)


def _fused_on_cpu(params: ParamsT) -> tuple[list[Any], bool | None]:
    """The parameters (as a list) and torch's `fused` option for them: True when every one is
    a floating-point CPU tensor. On the CPU torch otherwise steps SGD and Adam one tensor at a
    time, a dozen small kernels per tensor per step; its fused kernel does the same update in
    one pass (measured in bench/README.md). Elsewhere (a GPU) None leaves torch's own default
    (its multi-tensor kernels)."""
    listed = [
        {**item, "params": _listed(item["params"])} if isinstance(item, dict) else item
        for item in params
    ]
    tensors = [
        tensor
        for item in listed
        for tensor in (item["params"] if isinstance(item, dict) else [item])
        if isinstance(tensor, torch.Tensor)
    ]
    cpu = bool(tensors) and all(t.is_floating_point() and t.device.type == "cpu" for t in tensors)
    return listed, True if cpu else None


def _listed(params: Any) -> list[Any]:
    """A param group's "params" as torch's `add_param_group` reads them: one tensor or many."""
    return [params] if isinstance(params, torch.Tensor) else list(params)


registry: Registry[Optimizer] = Registry("optimizer")
register = registry.register
get = registry.get
serialize = registry.serialize
deserialize = registry.deserialize
names = registry.names


@register("sgd")
@dataclass
class SGD(Optimizer):
    """Keras ``SGD``: plain, momentum or Nesterov gradient descent (``torch.optim.SGD``)."""

    learning_rate: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False

    def __post_init__(self) -> None:
        self.learning_rate = _check("learning_rate", self.learning_rate, 0.0, strict=True)
        self.momentum = _check("momentum", self.momentum, 0.0, 1.0)
        self.nesterov = _flag("nesterov", self.nesterov)

    def build(self, params: ParamsT) -> torch.optim.Optimizer:
        # Keras ignores nesterov without momentum; torch refuses the combination.
        nesterov = self.nesterov and self.momentum > 0
        params, fused = _fused_on_cpu(params)
        return torch.optim.SGD(
            params, lr=self.learning_rate, momentum=self.momentum, nesterov=nesterov, fused=fused
        )


@register("momentum")
@dataclass
class Momentum(SGD):
    """SGD with classical momentum: Keras ``SGD(momentum=0.9)``."""

    learning_rate: float = 0.01
    momentum: float = 0.9
    nesterov: bool = dataclasses.field(default=False, init=False, repr=False)

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, "momentum": self.momentum}


@register("nesterov")
@dataclass
class Nesterov(Momentum):
    """SGD with Nesterov momentum: Keras ``SGD(momentum=0.9, nesterov=True)``."""

    nesterov: bool = dataclasses.field(default=True, init=False, repr=False)


@register("rmsprop")
@dataclass
class RMSprop(Optimizer):
    """Keras ``RMSprop`` (`KerasRMSprop`)."""

    learning_rate: float = 0.001
    rho: float = 0.9
    momentum: float = 0.0
    epsilon: float = 1e-7
    centered: bool = False

    def __post_init__(self) -> None:
        self.learning_rate = _check("learning_rate", self.learning_rate, 0.0, strict=True)
        self.rho = _check("rho", self.rho, 0.0, 1.0)
        self.momentum = _check("momentum", self.momentum, 0.0, 1.0)
        self.epsilon = _check("epsilon", self.epsilon, 0.0)
        self.centered = _flag("centered", self.centered)

    def build(self, params: ParamsT) -> torch.optim.Optimizer:
        return KerasRMSprop(
            params,
            lr=self.learning_rate,
            rho=self.rho,
            momentum=self.momentum,
            eps=self.epsilon,
            centered=self.centered,
        )


@register("adam")
@dataclass
class Adam(Optimizer):
    """Keras ``Adam`` (`KerasAdam`)."""

    learning_rate: float = 0.001
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    amsgrad: bool = False

    def __post_init__(self) -> None:
        self.learning_rate = _check("learning_rate", self.learning_rate, 0.0, strict=True)
        self.beta_1 = _check("beta_1", self.beta_1, 0.0, 1.0)
        self.beta_2 = _check("beta_2", self.beta_2, 0.0, 1.0)
        self.epsilon = _check("epsilon", self.epsilon, 0.0)
        self.amsgrad = _flag("amsgrad", self.amsgrad)

    def build(self, params: ParamsT) -> torch.optim.Optimizer:
        params, fused = _fused_on_cpu(params)
        return KerasAdam(
            params,
            lr=self.learning_rate,
            betas=(self.beta_1, self.beta_2),
            eps=self.epsilon,
            amsgrad=self.amsgrad,
            fused=fused,
        )


@register("adamw")
@dataclass
class AdamW(Optimizer):
    """Keras ``AdamW``: decoupled weight decay ``w *= 1 - lr*wd``, then Adam (`KerasAdamW`)."""

    learning_rate: float = 0.001
    weight_decay: float = 0.004
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    amsgrad: bool = False

    def __post_init__(self) -> None:
        self.learning_rate = _check("learning_rate", self.learning_rate, 0.0, strict=True)
        self.weight_decay = _check("weight_decay", self.weight_decay, 0.0)
        self.beta_1 = _check("beta_1", self.beta_1, 0.0, 1.0)
        self.beta_2 = _check("beta_2", self.beta_2, 0.0, 1.0)
        self.epsilon = _check("epsilon", self.epsilon, 0.0)
        self.amsgrad = _flag("amsgrad", self.amsgrad)

    def build(self, params: ParamsT) -> torch.optim.Optimizer:
        params, fused = _fused_on_cpu(params)
        return KerasAdamW(
            params,
            lr=self.learning_rate,
            betas=(self.beta_1, self.beta_2),
            eps=self.epsilon,
            weight_decay=self.weight_decay,
            amsgrad=self.amsgrad,
            fused=fused,
        )
