"""The built-in optimizers' updates over a pack's stacked parameters, each member with its own
hyperparameters.

A pack (`trainer.packing`) keeps each layer's weights of all members in one tensor, members on
the first axis. Stepping one torch optimizer per member costs a dozen kernel launches per
parameter per member, more than the fused forward and backward save; torch.optim has no
per-slice hyperparameters (its learning rate is one number per param group). So the update
equations of `trainer.optimizers` are written here once more, with every hyperparameter a
vector over members: one launch per operation for the whole pack. They follow the torch
implementations `trainer.optimizers` builds, operation by operation (same iterates to float
rounding; tests compare a packed member with the same trial trained alone):

- `sgd`/`momentum`/`nesterov` (``torch.optim.SGD``, dampening 0): ``b = m*b + g`` (b starts at
  0, so the first step's b is g, as torch's clone), ``w -= lr*b`` (nesterov ``w -= lr*(g + m*b)``).
- `rmsprop` (`KerasRMSprop`): eps inside the root; momentum as a buffer of increments.

`adam`/`adamw` run torch's own fused Adam kernel (what ``torch.optim.Adam(fused=True)`` runs:
one kernel for many tensors, faster on the CPU than any sum of broadcast kernels), with
Keras's epsilon as `KerasAdam` sets it (``eps / sqrt(1 - b2**t)``). The kernel takes one
learning rate, so where the members share everything else (betas, epsilon, step count: a
search over the learning rate) ONE call steps the whole pack with rate 1
into a zeroed scratch tensor, which then holds each element's ``-m_hat / (sqrt(v_hat) + eps)``,
and each member's parameters move by their own rate times it (the Adam step is linear in the
rate and nothing else in it depends on the parameters). Otherwise each member's slices take
their own call. Any other optimizer (a plugin's) steps as each member's own torch optimizer
(`PerMember`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from trainer import optimizers
from trainer.checkpoint_io import snapshot


class PackOptimizer(Protocol):
    def step(self) -> None:
        """Update the stacked parameters from their `.grad`."""

    def keep(self, positions: Sequence[int], params: Sequence[torch.Tensor]) -> None:
        """Only the members at `positions` go on training, now in `params` (re-stacked)."""

    def member_state(self, position: int) -> dict[str, Any]:
        """A snapshot of one member's optimizer state (for its checkpoint): tensors of its
        own, which later steps leave as they are."""

    def load_member_state(self, position: int, state: dict[str, Any]) -> None: ...


def pack_optimizer(
    factories: Sequence[optimizers.Optimizer],
    params: Sequence[torch.Tensor],
    member_params: Sequence[Sequence[torch.Tensor]],
) -> PackOptimizer:
    """The vectorized update for the built-in optimizers, else one torch optimizer per member
    over its own (aliased) parameters."""
    kind = type(factories[0])
    if any(type(factory) is not kind for factory in factories):
        raise ValueError("a pack's members must share one optimizer class")
    if kind in (optimizers.SGD, optimizers.Momentum, optimizers.Nesterov):
        return StackedSGD(factories, params)
    if kind in (optimizers.Adam, optimizers.AdamW):
        return StackedAdam(factories, params)
    if kind is optimizers.RMSprop:
        return StackedRMSprop(factories, params)
    return PerMember(factories, params, member_params)


class _Stacked:
    """Per-member hyperparameters (vectors over members) and per-parameter state tensors
    shaped as the stacked parameters."""

    def __init__(self, params: Sequence[torch.Tensor], hyper: dict[str, list[float]]) -> None:
        self.params = list(params)
        device = self.params[0].device
        self.hyper = {
            name: torch.tensor(values, dtype=torch.float64, device=device)
            for name, values in hyper.items()
        }
        self.steps = torch.zeros(len(next(iter(hyper.values()))), dtype=torch.float64)
        self.state: dict[str, list[torch.Tensor]] = {}

    def buffers(self, name: str) -> list[torch.Tensor]:
        if name not in self.state:
            self.state[name] = [torch.zeros_like(p) for p in self.params]
        return self.state[name]

    def vector(self, values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A per-member vector as a tensor broadcasting over a stacked parameter."""
        shaped = values.view(-1, *([1] * (like.dim() - 1)))
        return shaped.to(device=like.device, dtype=like.dtype)

    def keep(self, positions: Sequence[int], params: Sequence[torch.Tensor]) -> None:
        index = torch.tensor(list(positions), dtype=torch.long)
        self.params = list(params)
        self.steps = self.steps[index]
        self.hyper = {name: values[index.to(values.device)] for name, values in self.hyper.items()}
        self.state = {
            name: [t[index.to(t.device)].clone() for t in tensors]
            for name, tensors in self.state.items()
        }

    def member_state(self, position: int) -> dict[str, Any]:
        state: dict[str, Any] = {"step": float(self.steps[position])}
        for name, tensors in self.state.items():
            state[name] = [t[position].clone() for t in tensors]
        return state

    def load_member_state(self, position: int, state: dict[str, Any]) -> None:
        self.steps[position] = float(state["step"])
        for name, values in state.items():
            if name == "step":
                continue
            for buffer, value in zip(self.buffers(name), values, strict=True):
                buffer[position].copy_(value)


class StackedSGD(_Stacked):
    def __init__(self, factories: Sequence[optimizers.Optimizer], params: Sequence[torch.Tensor]):
        sgd = [_checked(factory, optimizers.SGD) for factory in factories]
        super().__init__(
            params,
            {
                "lr": [f.learning_rate for f in sgd],
                "momentum": [f.momentum for f in sgd],
                # torch refuses nesterov without momentum; Keras ignores it (as `SGD.build`)
                "nesterov": [float(f.nesterov and f.momentum > 0) for f in sgd],
            },
        )
        self.uses_momentum = any(f.momentum > 0 for f in sgd)

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        if not self.uses_momentum:
            for p in self.params:
                assert p.grad is not None
                p.sub_(self.vector(self.hyper["lr"], p) * p.grad)
            return
        for p, buffer in zip(self.params, self.buffers("momentum_buffer"), strict=True):
            grad = p.grad
            assert grad is not None
            momentum = self.vector(self.hyper["momentum"], p)
            buffer.mul_(momentum).add_(grad)
            nesterov = self.vector(self.hyper["nesterov"], p)
            # nesterov (1 or 0 per member): g + m*b, else b
            direction = torch.where(nesterov > 0, grad + momentum * buffer, buffer)
            p.sub_(self.vector(self.hyper["lr"], p) * direction)


class StackedAdam(_Stacked):
    def __init__(self, factories: Sequence[optimizers.Optimizer], params: Sequence[torch.Tensor]):
        adam = [_checked(factory, optimizers.Adam, optimizers.AdamW) for factory in factories]
        self.amsgrad = adam[0].amsgrad
        if any(f.amsgrad != self.amsgrad for f in adam):
            raise ValueError("a pack's Adam members must agree on amsgrad")
        self.decoupled = isinstance(adam[0], optimizers.AdamW)
        super().__init__(
            params,
            {
                "lr": [f.learning_rate for f in adam],
                "beta_1": [f.beta_1 for f in adam],
                "beta_2": [f.beta_2 for f in adam],
                "epsilon": [f.epsilon for f in adam],
                "weight_decay": [getattr(f, "weight_decay", 0.0) for f in adam],
            },
        )
        self._views: list[_AdamViews] | None = None
        self._grads_seen: list[torch.Tensor | None] = []
        self._floats: dict[str, list[float]] = {}
        self._together: _AdamTogether | None = None
        self._decided = False

    def keep(self, positions: Sequence[int], params: Sequence[torch.Tensor]) -> None:
        super().keep(positions, params)
        self._views = None
        self._decided = False

    def load_member_state(self, position: int, state: dict[str, Any]) -> None:
        super().load_member_state(position, state)
        self._views = None
        self._decided = False

    def _shared(self) -> bool:
        """Whether the members differ in nothing but the learning rate and weight decay."""
        same = [self.steps, *(self.hyper[name] for name in ("beta_1", "beta_2", "epsilon"))]
        return all(bool((values == values[0]).all()) for values in same)

    def _stepping_together(self) -> _AdamTogether | None:
        if not self._decided:
            self._decided = True
            self._together = None
            if self._shared():
                self._together = _AdamTogether(self)
        return self._together

    def _member_views(self) -> list[_AdamViews]:
        """Each member's slices of the parameters, gradients and states (made again only when
        the stack or a gradient tensor is replaced)."""
        averages, squares = self.buffers("exp_avg"), self.buffers("exp_avg_sq")
        maxima = self.buffers("max_exp_avg_sq") if self.amsgrad else []
        # the fused kernel counts steps in one float32 tensor per parameter
        counts = torch.zeros(
            (len(self.steps), len(self.params)), dtype=torch.float32, device=self.params[0].device
        )
        counts += self.steps.to(counts).unsqueeze(1)
        self._counts = counts
        views = []
        for position in range(len(self.steps)):
            views.append(
                _AdamViews(
                    [p[position] for p in self.params],
                    [_grad(p)[position] for p in self.params],
                    [a[position] for a in averages],
                    [s[position] for s in squares],
                    [m[position] for m in maxima],
                    list(counts[position].unbind()),
                )
            )
        return views

    @torch.no_grad()
    def step(self) -> None:
        together = self._stepping_together()
        if together is not None:
            together.step(self.params)
        else:
            self._step_each()
        self.steps += 1

    def _step_each(self) -> None:
        grads = [p.grad for p in self.params]
        if self._views is None or any(
            g is not seen for g, seen in zip(grads, self._grads_seen, strict=True)
        ):
            self._views = self._member_views()
            self._grads_seen = grads
            # read once per stacking, not per step (on a GPU each read is a sync)
            self._floats = {name: values.tolist() for name, values in self.hyper.items()}
        hyper = self._floats
        for position, views in enumerate(self._views):
            _keras_fused_adam(
                views,
                amsgrad=self.amsgrad,
                decoupled=self.decoupled,
                beta_1=hyper["beta_1"][position],
                beta_2=hyper["beta_2"][position],
                epsilon=hyper["epsilon"][position],
                done=float(self.steps[position]),
                lr=hyper["lr"][position],
                weight_decay=hyper["weight_decay"][position],
            )


def _keras_fused_adam(
    tensors: _AdamViews,
    *,
    amsgrad: bool,
    decoupled: bool,
    beta_1: float,
    beta_2: float,
    epsilon: float,
    done: float,
    lr: float,
    weight_decay: float,
) -> None:
    """torch's fused Adam kernel over `tensors` with Keras's epsilon for the step after
    `done`: what `torch.optim.adam.adam(fused=True)` runs for tensors on one device, called
    directly (its Python wrapper, which groups the tensors by device and dtype, cost a fifth
    of a pack's update on the CPU)."""
    torch._foreach_add_(tensors.counts, 1)
    kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
    kernel(
        tensors.params,
        tensors.grads,
        tensors.averages,
        tensors.squares,
        tensors.maxima,
        tensors.counts,
        amsgrad=amsgrad,
        beta1=beta_1,
        beta2=beta_2,
        lr=lr,
        weight_decay=weight_decay,
        eps=optimizers.keras_adam_epsilon(epsilon, beta_2, done),
        maximize=False,
    )


class _AdamTogether:
    """One fused Adam call for a pack whose members share betas, epsilon and step count
    (module docstring): rate 1 into zeroed scratch tensors, then each member's own rate (and,
    for AdamW, its decoupled decay ``w *= 1 - lr*wd`` first, as torch's AdamW)."""

    def __init__(self, adam: StackedAdam) -> None:
        params = adam.params
        self.amsgrad, self.decoupled = adam.amsgrad, adam.decoupled
        self.averages = adam.buffers("exp_avg")
        self.squares = adam.buffers("exp_avg_sq")
        self.maxima = adam.buffers("max_exp_avg_sq") if adam.amsgrad else []
        self.scratch = [torch.zeros_like(p) for p in params]
        done = float(adam.steps[0])
        # the fused kernel counts steps in one float32 tensor per parameter
        self.counts = [torch.tensor(done, dtype=torch.float32, device=p.device) for p in params]
        self.done = done
        self.beta_1 = float(adam.hyper["beta_1"][0])
        self.beta_2 = float(adam.hyper["beta_2"][0])
        self.epsilon = float(adam.hyper["epsilon"][0])
        self.rates = [adam.vector(adam.hyper["lr"], p) for p in params]
        decays = adam.hyper["lr"] * adam.hyper["weight_decay"]
        self.kept = (
            [adam.vector(1.0 - decays, p) for p in params]
            if adam.decoupled and bool((decays != 0).any())
            else None
        )

    def step(self, params: Sequence[torch.Tensor]) -> None:
        torch._foreach_zero_(self.scratch)
        _keras_fused_adam(
            _AdamViews(
                self.scratch,
                [_grad(p) for p in params],
                self.averages,
                self.squares,
                self.maxima,
                self.counts,
            ),
            amsgrad=self.amsgrad,
            decoupled=False,
            beta_1=self.beta_1,
            beta_2=self.beta_2,
            epsilon=self.epsilon,
            done=self.done,
            lr=1.0,
            weight_decay=0.0,
        )
        self.done += 1
        # one call per operation for all parameters (as many per parameter cost more than the
        # arithmetic at these sizes); the same products and sums as parameter by parameter
        if self.kept is not None:
            torch._foreach_mul_(list(params), self.kept)
        torch._foreach_mul_(self.scratch, self.rates)
        torch._foreach_add_(list(params), self.scratch)


@dataclass(frozen=True)
class _AdamViews:
    params: list[torch.Tensor]
    grads: list[torch.Tensor]
    averages: list[torch.Tensor]
    squares: list[torch.Tensor]
    maxima: list[torch.Tensor]
    counts: list[torch.Tensor]


def _grad(param: torch.Tensor) -> torch.Tensor:
    if param.grad is None:
        raise RuntimeError("a packed parameter got no gradient")
    return param.grad


class StackedRMSprop(_Stacked):
    def __init__(self, factories: Sequence[optimizers.Optimizer], params: Sequence[torch.Tensor]):
        rms = [_checked(factory, optimizers.RMSprop) for factory in factories]
        super().__init__(
            params,
            {
                "lr": [f.learning_rate for f in rms],
                "rho": [f.rho for f in rms],
                "momentum": [f.momentum for f in rms],
                "epsilon": [f.epsilon for f in rms],
            },
        )
        self.centered = rms[0].centered
        if any(f.centered != self.centered for f in rms):
            raise ValueError("a pack's RMSprop members must agree on centered")
        self.uses_momentum = any(f.momentum > 0 for f in rms)

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        hyper = self.hyper
        averages = self.buffers("average_gradient") if self.centered else None
        momenta = self.buffers("momentum") if self.uses_momentum else None
        velocities = self.buffers("velocity")
        for index, (p, velocity) in enumerate(zip(self.params, velocities, strict=True)):
            grad = p.grad
            assert grad is not None
            rho = self.vector(hyper["rho"], p)
            velocity.mul_(rho).add_((1 - rho) * grad * grad)
            if averages is not None:
                average = averages[index]
                average.mul_(rho).add_((1 - rho) * grad)
                denominator = velocity - average * average
            else:
                denominator = velocity.clone()
            denominator.add_(self.vector(hyper["epsilon"], p)).sqrt_()
            increment = self.vector(hyper["lr"], p) * grad / denominator
            if momenta is not None:
                buffer = momenta[index]
                buffer.mul_(self.vector(hyper["momentum"], p)).add_(increment)
                p.sub_(buffer)
            else:
                p.sub_(increment)


class PerMember:
    """A plugin's optimizer: each member's own torch optimizer over its own parameters,
    which alias the member's slice of the stack (so its in-place update lands there)."""

    def __init__(
        self,
        factories: Sequence[optimizers.Optimizer],
        params: Sequence[torch.Tensor],
        member_params: Sequence[Sequence[torch.Tensor]],
    ) -> None:
        self.params = list(params)
        self.member_params = [list(own) for own in member_params]
        self.optimizers = [
            factory.build(own) for factory, own in zip(factories, self.member_params, strict=True)
        ]

    def step(self) -> None:
        for position, (own, optimizer) in enumerate(
            zip(self.member_params, self.optimizers, strict=True)
        ):
            for stacked, param in zip(self.params, own, strict=True):
                param.grad = None if stacked.grad is None else stacked.grad[position]
            optimizer.step()

    def keep(self, positions: Sequence[int], params: Sequence[torch.Tensor]) -> None:
        self.params = list(params)
        self.member_params = [self.member_params[i] for i in positions]
        self.optimizers = [self.optimizers[i] for i in positions]

    def member_state(self, position: int) -> dict[str, Any]:
        state: dict[str, Any] = snapshot(self.optimizers[position].state_dict())
        return state

    def load_member_state(self, position: int, state: dict[str, Any]) -> None:
        self.optimizers[position].load_state_dict(state)


def _checked(factory: optimizers.Optimizer, *kinds: type[Any]) -> Any:
    if not isinstance(factory, kinds):
        raise TypeError(f"expected one of {[k.__name__ for k in kinds]}, got {factory!r}")
    return factory
