"""Trial packing: several trials of one network shape trained as one fused model.

Trials of a technique search are mostly small models that differ only in hyperparameters;
trained one at a time, per-step framework and kernel-launch overhead dominates. A pack trains
its members together: each mini-batch is ONE batched matmul per layer for all active members
(`torch.baddbmm` over weights stacked at each step), one backward, then one optimizer update
with each member's own hyperparameters. For the common case, a ReLU MLP with a cross-entropy or
mean-squared-error loss and Keras's L1/L2 (or no) regularizers, the step runs without autograd:
the forward, the loss's gradient and the backward are written out (`trainer.packed_mlp`), with
autograd's arithmetic. Everything else stays each member's own, with the code that trains it
alone: its `TrialModule` (built under its seed: the same initial weights), its data order (its
own shuffle generator), its dropout masks (a generator starting where the global one stood
after its initialization, the same bits, threshold and scale as the networks' `Dropout`), its
regularization penalty (Keras's L1/L2 with their gradients added by hand, the rest through
autograd), its optimizer state, its validation metrics and epoch row (`TrialModule.record_epoch`),
its EarlyStopping / ModelCheckpoint / pruning decisions (the Keras logic of
`trainer.callbacks`), its checkpoints and its `TrialResult`. On the CPU a member's curves equal
those of `run_trial` to float rounding (tested); on a GPU the dropout masks come from another
generator than the fused kernel's of a lone trial (same distribution, other draws).

A member that stops (early stopping, pruning, divergence, its own `max_epochs`) leaves the
stack at the end of that epoch and costs nothing afterwards.

Written by hand rather than with `torch.func` ensembling (`stack_module_state` + `vmap`): vmap's
randomness cannot draw each member's dropout from that member's own generator (so no member
would match its lone run), and stacked leaf parameters would force one optimizer with one
learning rate for all members, where each member here keeps its own torch optimizer.

Checkpoints: `best.ckpt` is a Lightning-loadable checkpoint of the member's `TrialModule`;
`last.ckpt` holds the member's whole training state and is marked as a pack member's.
`run_trial` given such a `last.ckpt` resumes it here (a pack of one), so a member of a pack
killed mid-run resumes on its own or in another pack alike.
"""

from __future__ import annotations

import functools
import itertools
import math
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning
import lightning.pytorch as pl
import torch
from torch import nn

from trainer import optimizers, regularizers
from trainer.callbacks import KerasEarlyStopping, KerasModelCheckpoint, Reporter
from trainer.checkpoint_io import AtomicCheckpointIO
from trainer.config import TrialConfig
from trainer.data import AnySplits, Split, StreamedSplit, load_data
from trainer.layers import (
    dropout_bits,
    dropout_elements,
    dropout_scaled,
    dropout_threshold,
    dropout_words,
)
from trainer.lit_module import DEAD_UNITS, EVAL_CHUNK, TrialModule
from trainer.losses import per_member_loss, resolve_loss
from trainer.metrics import DATA_LOSS, LOSS
from trainer.networks import NetworkConfig
from trainer.packed_mlp import (
    LOSSES_BY_HAND,
    LossByHand,
    ReluMLP,
    StackedLinear,
    relu_mlp_backward,
    relu_mlp_forward,
)
from trainer.packed_optimizers import pack_optimizer
from trainer.run import (
    PACK_MEMBER_MARK,
    EpochRecord,
    Outcome,
    TrialResult,
    check_task,
    epoch_record,
    is_pack_member_checkpoint,
    resolve_device,
    trainable_parameters,
    trial_result,
)

__all__ = [
    "PACK_MAX_PARAMETERS",
    "PackMember",
    "is_pack_member_checkpoint",
    "pack_key",
    "packing_advice",
    "packing_blocker",
    "packing_summary",
    "run_pack",
]

PACK_MAX_PARAMETERS = 100_000
"""Packing pays for small models only: at most this many parameters per trial (measured in
bench/README.md: the gain falls as the model grows)."""


@dataclass(frozen=True)
class PackMember:
    """One trial of a pack, with what `run_trial` would have been given for it."""

    config: TrialConfig
    reporter: Reporter | None = None
    checkpoint_dir: Path | None = None
    resume_from: Path | None = None
    on_epoch: Callable[[EpochRecord], None] | None = None


def packing_blocker(config: TrialConfig) -> str | None:
    """Why `config` cannot be trained in a pack, in a few words (None: it can)."""
    if config.model.type != "mlp":
        return f"only the built-in mlp is packed (this trial's model is {config.model.type!r})"
    network = NetworkConfig.model_validate(config.model.config)
    if network.batch_norm:
        return "batch normalization is not packed"
    if config.augmentation.active:
        return "data augmentation is not packed"
    if config.dataset.folds is not None:
        return "k-fold cross-validation is not packed"
    if config.activity_regularizer is not None:
        return "an activity regularizer is not packed"
    if not isinstance(config.checkpoint.save_freq, str):
        return "a ModelCheckpoint saving every N steps (save_freq) is not packed"
    if config.dataset.data_loader.in_memory is False:
        return "streamed data (data_loader.in_memory false) is not packed"
    return None


def packing_advice(config: TrialConfig) -> str | None:
    """Why packing `config` would not pay or cannot be done (None: pack it). Loads its data
    (cached per process, as its training will) to count the model's parameters."""
    blocker = packing_blocker(config)
    if blocker is not None:
        return blocker
    data = load_data(config.dataset, image=False)
    if not isinstance(data.train, Split):
        return "streamed data is not packed"
    parameters = mlp_parameters(config, data.input_shape, data.n_outputs)
    if parameters > PACK_MAX_PARAMETERS:
        return (
            f"{parameters:,} parameters per trial; packing pays for small models only "
            f"(at most {PACK_MAX_PARAMETERS:,})"
        )
    return None


def mlp_parameters(config: TrialConfig, input_shape: tuple[int, ...], n_outputs: int) -> int:
    """The built-in MLP's weights and biases for these inputs and outputs."""
    widths = [
        math.prod(input_shape),
        *NetworkConfig.model_validate(config.model.config).hidden_units,
        n_outputs,
    ]
    return sum(a * b + b for a, b in itertools.pairwise(widths))


def packing_summary(config: TrialConfig) -> str:
    """What the members of a pack share, in words (for the worker's log)."""
    network = NetworkConfig.model_validate(config.model.config)
    shape = "-".join(str(units) for units in network.hidden_units) or "no hidden layer"
    optimizer = optimizers.serialize(optimizers.get(config.optimizer))["class_name"]
    return f"mlp {shape} {network.activation}, batch {config.batch_size}, {optimizer}"


def pack_key(config: TrialConfig) -> Hashable:
    """Trials with equal keys can share a pack: the same data, network shape (all but the
    dropout rate), batch size, loss, optimizer class and its on/off options (amsgrad,
    centered, nesterov); the numbers (learning rate, momentum, λ, ...) are each member's."""
    network = NetworkConfig.model_validate(config.model.config)
    optimizer = optimizers.serialize(optimizers.get(config.optimizer))
    return (
        config.dataset.model_dump_json(),
        network.hidden_units,
        network.activation,
        config.batch_size,
        config.loss,
        optimizer["class_name"],
        tuple(sorted((k, v) for k, v in optimizer["config"].items() if isinstance(v, bool))),
    )


def run_pack(
    members: Sequence[PackMember],
    *,
    device: str = "auto",
    num_threads: int | None = None,
    stop_requested: Callable[[], bool] | None = None,
) -> list[TrialResult]:
    """Train `members` as one fused model; one `TrialResult` per member, in order.

    Each member's arguments mean what `run_trial`'s do; `stop_requested` (polled each epoch)
    interrupts every member still training, each checkpointed for its resume. Raises
    ValueError when a member cannot be packed (`packing_blocker`) or members differ in
    `pack_key`.
    """
    if not members:
        return []
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    _check_packable([member.config for member in members])
    started = time.perf_counter()
    target = _torch_device(device)
    data = load_data(members[0].config.dataset, image=False)
    if not isinstance(data.train, Split):
        raise ValueError("packing needs the data in memory; a streamed dataset runs alone")
    for member in members:
        check_task(member.config, data.task)
    data = data.to(target)
    trials = [_Member(spec, data, target, started) for spec in members]
    loss_name = resolve_loss(members[0].config.loss, data.task)
    loss = per_member_loss(loss_name)
    by_hand = LOSSES_BY_HAND.get(loss_name)
    training = [trial for trial in trials if trial.result is None]
    pack = _Pack(training) if training else None
    while pack is not None and pack.members:
        _train_epoch(pack, data, loss, by_hand)
        stop = stop_requested is not None and stop_requested()
        for position, trial in enumerate(pack.members):
            trial.close_epoch(stop, functools.partial(pack.optimizer.member_state, position))
        pack.leave()
    return [trial.result for trial in trials if trial.result is not None]


def _check_packable(configs: Sequence[TrialConfig]) -> None:
    key = pack_key(configs[0])
    for index, config in enumerate(configs):
        blocker = packing_blocker(config)
        if blocker is not None:
            raise ValueError(f"pack member {index} cannot be packed: {blocker}")
        if pack_key(config) != key:
            raise ValueError(
                f"pack member {index} differs from member 0 in data, network shape, batch "
                "size, loss or optimizer class; only trials with equal pack_key() share a pack"
            )


def _torch_device(device: str) -> torch.device:
    accelerator, devices = resolve_device(device)
    if accelerator == "cpu":
        return torch.device("cpu")
    return torch.device("cuda", devices[0] if isinstance(devices, list) else 0)


@dataclass
class _Steps:
    """One epoch's per-step values of the active members (each a tensor over members)."""

    losses: list[torch.Tensor] = field(default_factory=list)
    data_losses: list[torch.Tensor] = field(default_factory=list)
    outputs: list[torch.Tensor] = field(default_factory=list)
    targets: list[torch.Tensor] = field(default_factory=list)

    def figures(
        self, classification: bool, n: int, batch_size: int, members: list[_Member]
    ) -> list[dict[str, float]]:
        """Each member's training figures of the epoch as `TrialModule.end_epoch` makes
        them (Keras's running loss and data loss, the accuracy or mae of the steps'
        predictions), for the whole pack at once: one pass, one read of the results."""
        losses = torch.stack(self.losses, dim=1)
        steps = losses.shape[1]
        seen = min(steps * batch_size, n)
        weights = torch.full((steps,), float(batch_size), device=losses.device)
        weights[-1] = seen - (steps - 1) * batch_size  # the last batch may be short
        mean = losses @ weights
        data_mean = torch.stack(self.data_losses, dim=1) @ weights if self.data_losses else mean
        outputs, targets = torch.cat(self.outputs, dim=1), torch.cat(self.targets, dim=1)
        score, cells = _score_sums(outputs, targets, classification)
        figures = torch.stack([mean.double(), data_mean.double(), score.double()]).tolist()
        return [
            {
                LOSS: figures[0][position] / seen,
                DATA_LOSS: figures[1 if member.module.penalized else 0][position] / seen,
                member.module.score: figures[2][position] / cells,
            }
            for position, member in enumerate(members)
        ]


def _score_sums(
    outputs: torch.Tensor, targets: torch.Tensor, classification: bool
) -> tuple[torch.Tensor, int]:
    """Per member (the leading axis), its right predictions (classification) or its summed
    absolute error, and the count they are a share of (rows, or rows × outputs)."""
    if classification:
        return (outputs.argmax(dim=2) == targets).sum(dim=1), outputs.shape[1]
    return (outputs - targets).abs().flatten(1).sum(dim=1), outputs[0].numel()


class _Pack:
    """The members still training, their Linear weights and biases stacked (members first):
    the leaves the fused step trains. Each member's own Parameters alias their slice
    (`param.data = stacked[i]`), so its module (evaluation, state_dict, checkpoints) always
    sees its current weights; a member that finished leaves, the rest are stacked anew."""

    def __init__(self, members: list[_Member]) -> None:
        self.members = members
        self.activation = members[0].activation
        self.params = self._stacked(members)
        self._penalties = _penalties(members, self.params)
        self._dropout = _pack_dropout(members, self.params[0])
        self.optimizer = pack_optimizer(
            [member.factory for member in members],
            self.params,
            [member.own_params for member in members],
        )
        for position, member in enumerate(members):
            if member.optimizer_resume is not None:
                self.optimizer.load_member_state(position, member.optimizer_resume)
                member.optimizer_resume = None

    @staticmethod
    def _stacked(members: list[_Member]) -> list[torch.Tensor]:
        """[W0, b0, W1, b1, ...] stacked over members, aliased by the members' Parameters."""
        params = [
            torch.stack([member.own_params[index].detach() for member in members]).requires_grad_()
            for index in range(len(members[0].own_params))
        ]
        for position, member in enumerate(members):
            for stacked, own in zip(params, member.own_params, strict=True):
                own.data = stacked.data[position]
        return params

    def leave(self) -> None:
        """Drop the members that finished this epoch (they stop costing compute)."""
        positions = [i for i, member in enumerate(self.members) if member.result is None]
        if len(positions) == len(self.members):
            return
        self.members = [self.members[i] for i in positions]
        if not self.members:
            return
        self.params = self._stacked(self.members)
        self._penalties = _penalties(self.members, self.params)
        self._dropout = _pack_dropout(self.members, self.params[0])
        self.optimizer.keep(positions, self.params)

    def penalties(self) -> torch.Tensor | None:
        """Each member's kernel and bias penalty (a vector over members; None: none has one).
        Keras's L1/L2 are evaluated without autograd (`add_penalty_gradients` adds their
        gradients after the backward); any other regularizer is differentiated by autograd."""
        total: torch.Tensor | None = None
        for stacked, penalty in zip(self.params, self._penalties, strict=True):
            if penalty is not None:
                value = penalty.value(stacked)
                total = value if total is None else total + value
        return total

    @torch.no_grad()
    def add_penalty_gradients(self) -> None:
        """The L1/L2 penalties' gradients, `l1·sign(w) + 2·l2·w`, added to each member's:
        one `_foreach` call per operation for all parameters. Products then sums, as
        autograd's accumulation rounds them (a fused addcmul rounds once, and a chaotic
        member's curve would drift from its lone run's)."""
        l1: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]] = ([], [], [])
        l2: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]] = ([], [], [])
        for stacked, penalty in zip(self.params, self._penalties, strict=True):
            if penalty is None or not penalty.by_hand:
                continue
            assert stacked.grad is not None
            for group, strength in ((l1, penalty.l1_grad), (l2, penalty.l2_grad)):
                if strength is not None:
                    group[0].append(stacked.grad)
                    group[1].append(stacked)
                    group[2].append(strength)
        if l1[0]:
            torch._foreach_add_(l1[0], torch._foreach_mul(torch._foreach_sign(l1[1]), l1[2]))
        if l2[0]:
            torch._foreach_add_(l2[0], torch._foreach_mul(l2[1], l2[2]))

    def steps_by_hand(self) -> bool:
        """Whether a step can skip autograd (`step_by_hand`): a ReLU MLP whose regularizers,
        if any, are Keras's L1/L2 (their gradients are added by hand)."""
        return type(self.activation) is nn.ReLU and all(
            penalty is None or penalty.by_hand for penalty in self._penalties
        )

    def _noises(self, x: torch.Tensor) -> list[torch.Tensor | None]:
        """Each hidden layer's dropout noise for the members' batches `x` (None: no dropout)."""
        return [
            None
            if dropout is None
            else dropout.noise((len(self.members), x.shape[1], weight.shape[1]), self.members)
            for dropout, weight in zip(self._dropout, self.params[0::2], strict=False)
        ]

    @torch.no_grad()
    def step_by_hand(
        self, x: torch.Tensor, y: torch.Tensor, loss: LossByHand
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward and the gradients of a ReLU MLP's step without autograd (`loss` gives
        the data loss and its gradient): the outputs and each member's data loss; every
        stacked parameter's `.grad` is set (the penalties' are added after)."""
        noises = self._noises(x)
        outputs, inputs = relu_mlp_forward(x.flatten(2), noises, self.params)
        data_loss, grad = loss(outputs, y)
        grads = relu_mlp_backward(grad, inputs, noises, self.params)
        for param, own in zip(self.params, grads, strict=True):
            param.grad = own
        return outputs, data_loss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The members' MLPs on their own batches `x` (members, batch, ...): per layer one
        batched matmul, then the activation and each member's dropout."""
        hidden = x.flatten(2)
        layers = len(self.params) // 2
        if type(self.activation) is nn.ReLU:
            output: torch.Tensor = ReluMLP.apply(hidden, self._noises(x), *self.params)  # type: ignore[no-untyped-call]
            return output
        for layer in range(layers):
            weight, bias = self.params[2 * layer], self.params[2 * layer + 1]
            hidden = StackedLinear.apply(hidden, weight, bias)  # type: ignore[no-untyped-call]
            if layer == layers - 1:
                break
            hidden = self.activation(hidden)
            dropout = self._dropout[layer]
            if dropout is not None:
                hidden = hidden * dropout.noise(hidden.shape, self.members)
        return hidden

    @torch.no_grad()
    def infer(self, split: Split | StreamedSplit) -> tuple[torch.Tensor, list[float | None]]:
        """Every member's outputs on `split` in inference mode (no dropout), (members, rows,
        ...), computed in the chunks a lone evaluation takes, and per member the share of its
        ReLU units never active on the split (as `TrialModule.evaluate` counts them): one
        batched pass for the whole pack."""
        assert isinstance(split, Split)
        members = len(self.members)
        layers = len(self.params) // 2
        relu = type(self.activation) is nn.ReLU
        alive: list[torch.Tensor | None] = [None] * (layers - 1)
        chunks: list[torch.Tensor] = []
        for start in range(0, len(split), EVAL_CHUNK):
            hidden = split.X[start : start + EVAL_CHUNK].flatten(1).expand(members, -1, -1)
            for layer in range(layers):
                weight, bias = self.params[2 * layer], self.params[2 * layer + 1]
                hidden = torch.baddbmm(bias.unsqueeze(1), hidden, weight.mT)
                if layer == layers - 1:
                    break
                hidden = self.activation(hidden)
                if relu:
                    active = hidden.amax(dim=1) > 0
                    seen = alive[layer]
                    alive[layer] = active if seen is None else seen | active
            chunks.append(hidden)
        dead: list[float | None] = [None] * members
        counted = [active for active in alive if active is not None]
        if counted:
            total = sum(active.shape[1] for active in counted)
            living = torch.stack([active.sum(dim=1) for active in counted]).sum(dim=0)
            dead = [1.0 - float(count) / total for count in living.tolist()]
        return (chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1)), dead

    @torch.no_grad()
    def validate(
        self,
        split: Split,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        classification: bool,
    ) -> list[dict[str, float]]:
        """Each member's metrics on `split` as `TrialModule.evaluate` gives those an epoch's
        row needs (loss, data_loss, accuracy or mae, dead_units), for the whole pack at once:
        one pass, one read of the results."""
        outputs, dead = self.infer(split)
        members = len(self.members)
        targets = split.y.expand(members, *split.y.shape)
        data_loss = loss(outputs, targets)
        penalty = self.penalties()
        total = data_loss if penalty is None else data_loss + penalty
        score, cells = _score_sums(outputs, targets, classification)
        figures = torch.stack([total.double(), data_loss.double(), score.double()]).tolist()
        name = self.members[0].module.score
        metrics = []
        for position in range(members):
            own = {
                LOSS: figures[0][position],
                DATA_LOSS: figures[1][position],
                name: figures[2][position] / cells,
            }
            if dead[position] is not None:
                own[DEAD_UNITS] = dead[position]
            metrics.append(own)
        return metrics

    def publish_gradients(self) -> None:
        """Each member's Parameters get their slice of the stacked gradients (the epoch's
        gradient norms read them)."""
        for position, member in enumerate(self.members):
            for stacked, own in zip(self.params, member.own_params, strict=True):
                own.grad = None if stacked.grad is None else stacked.grad[position]


class _StackedPenalty:
    """The members' regularizers of one stacked parameter. Keras's L1/L2 (the built-ins a
    technique search samples) as one reduction over the pack, their gradients added by hand
    (cheaper than autograd's square/abs backward and its accumulation into the gradient);
    any other regularizer is called on each member's slice under autograd."""

    def __init__(
        self, stacked: torch.Tensor, kinds: list[regularizers.RegularizerLike | None]
    ) -> None:
        self.kinds = kinds
        self.by_hand = all(kind is None or type(kind) in _LP for kind in kinds)

        def vector(name: str) -> torch.Tensor | None:
            values = [float(getattr(kind, name, 0.0)) for kind in kinds]
            if not any(values):
                return None
            return torch.tensor(values, device=stacked.device, dtype=stacked.dtype)

        self.l1, self.l2 = vector("l1"), vector("l2")
        # the same strengths shaped to broadcast over the stacked parameter, for its gradient
        shape = (len(kinds),) + (1,) * (stacked.dim() - 1)
        self.l1_grad = None if self.l1 is None else self.l1.view(shape)
        self.l2_grad = None if self.l2 is None else (2 * self.l2).view(shape)
        self.dims = tuple(range(1, stacked.dim()))

    def value(self, stacked: torch.Tensor) -> torch.Tensor:
        if not self.by_hand:
            zero = torch.zeros((), device=stacked.device, dtype=stacked.dtype)
            return torch.stack(
                [zero if kind is None else kind(stacked[i]) for i, kind in enumerate(self.kinds)]
            )
        with torch.no_grad():
            # a vector norm is one pass without a temporary, where abs/square then sum is two
            # (the value is reported, not differentiated: its last bit may differ from alone)
            terms: list[torch.Tensor] = []
            if self.l1 is not None:
                terms.append(self.l1 * torch.linalg.vector_norm(stacked, 1, dim=self.dims))
            if self.l2 is not None:
                terms.append(self.l2 * torch.linalg.vector_norm(stacked, dim=self.dims).square())
            if not terms:  # every strength 0 (Keras's l1_l2 defaults)
                return torch.zeros(len(self.kinds), device=stacked.device, dtype=stacked.dtype)
            return terms[0] if len(terms) == 1 else terms[0] + terms[1]


def _penalties(members: list[_Member], params: list[torch.Tensor]) -> list[_StackedPenalty | None]:
    """Per stacked parameter (kernels at even positions, biases at odd), its penalty."""
    plans: list[_StackedPenalty | None] = []
    for index, stacked in enumerate(params):
        kinds = [m.bias_regularizer if index % 2 else m.kernel_regularizer for m in members]
        plans.append(None if all(k is None for k in kinds) else _StackedPenalty(stacked, kinds))
    return plans


_LP = (regularizers.L1, regularizers.L2, regularizers.L1L2)


def _train_epoch(
    pack: _Pack,
    data: AnySplits,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    by_hand: LossByHand | None,
) -> None:
    train = data.train
    assert isinstance(train, Split)
    active = pack.members
    n, batch_size = len(train), active[0].config.batch_size
    device = train.X.device
    orders = torch.stack([torch.randperm(n, generator=trial.module.shuffle) for trial in active])
    orders = orders.to(device, non_blocking=True)
    for trial in active:
        trial.module.network.train()
    classification = data.task == "classification"
    steps = _Steps()
    step_loss = by_hand if by_hand is not None and pack.steps_by_hand() else None
    for start in range(0, n, batch_size):
        index = orders[:, start : start + batch_size]
        # index_select on the flat indices: a third of advanced indexing's cost on the CPU
        flat = index.flatten()
        x = train.X.index_select(0, flat).view(*index.shape, *train.X.shape[1:])
        y = train.y.index_select(0, flat).view(*index.shape, *train.y.shape[1:])
        if step_loss is not None:
            outputs, data_loss = pack.step_by_hand(x, y, step_loss)
        else:
            outputs = pack.forward(x)
            data_loss = loss(outputs, y)
        penalties = pack.penalties()
        total = data_loss if penalties is None else data_loss + penalties
        if step_loss is None:
            for param in pack.params:  # fresh gradients, laid out as the params (StackedLinear)
                param.grad = None
            total.sum().backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        pack.add_penalty_gradients()
        pack.optimizer.step()
        steps.losses.append(total.detach())
        if penalties is not None:
            steps.data_losses.append(data_loss.detach())
        steps.outputs.append(outputs.detach())
        steps.targets.append(y)
    pack.publish_gradients()
    assert isinstance(data.val, Split)
    validation = pack.validate(data.val, loss, classification)
    for trial, figures, metrics in zip(
        active, steps.figures(classification, n, batch_size, active), validation, strict=True
    ):
        trial.module.progress.optimizer_steps += len(steps.losses)
        trial.end_epoch(figures, metrics)


class _PackDropout:
    """One hidden layer's dropout for the members of a pack: each member's inverted-dropout
    noise as the built-in networks' `Dropout` draws it on the CPU (`trainer.layers.dropout_noise`:
    the same bits, threshold and scale) but from the member's own generator; the comparison
    and scaling run once for the whole pack."""

    def __init__(self, rates: list[float], like: torch.Tensor) -> None:
        self.rates = rates
        shape = (len(rates), 1, 1)
        below = [dropout_threshold(rate) - 1.0 for rate in rates]
        self.below = torch.tensor(below, dtype=torch.float32, device=like.device).view(shape)
        scales = torch.tensor([1.0 / (1.0 - rate) for rate in rates], dtype=torch.float64)
        self.scales = scales.to(like.device, like.dtype).view(shape)

    def noise(self, shape: tuple[int, ...], members: list[_Member]) -> torch.Tensor:
        count = math.prod(shape[1:])
        words = torch.empty(
            len(members), dropout_words(count), dtype=torch.int64, device=self.scales.device
        )
        for own, trial, rate in zip(words.unbind(), members, self.rates, strict=True):
            if rate > 0:  # a member without dropout draws nothing (its threshold keeps all)
                dropout_bits(own, trial.dropout_generator)
        elements = dropout_elements(words, count).view(shape)
        return dropout_scaled(elements, self.below, self.scales, self.scales.dtype)


def _pack_dropout(members: list[_Member], like: torch.Tensor) -> list[_PackDropout | None]:
    """Per hidden layer, the members' dropout (None where no member drops units there)."""
    layers = len(members[0].dropout_rates)
    plans: list[_PackDropout | None] = []
    for layer in range(layers):
        rates = [member.dropout_rates[layer] for member in members]
        plans.append(_PackDropout(rates, like) if any(rates) else None)
    return plans


class _Member:
    """A trial in a pack: its module and optimizer, and the callbacks' decisions made
    per epoch as Lightning would make them for it alone (reporting, then EarlyStopping, then
    ModelCheckpoint, then the resume state)."""

    def __init__(
        self, spec: PackMember, data: AnySplits, device: torch.device, started: float
    ) -> None:
        self.spec = spec
        self.config = config = spec.config
        self.started = started
        self.result: TrialResult | None = None
        pl.seed_everything(config.seed, workers=False, verbose=False)
        module = TrialModule(config.to_dict(), data.input_shape, data.n_outputs, data.task)
        # Dropout draws next from the global generator in a lone trial: start from there.
        self.dropout_generator = torch.Generator(device=device)
        if device.type == "cpu":
            self.dropout_generator.set_state(torch.get_rng_state())
        else:
            self.dropout_generator.manual_seed(config.seed)
        module.attach_data(data)
        self.module = module.to(device)
        module.progress.device = str(device)
        self.factory = optimizers.get(config.optimizer)
        self.kernel_regularizer = regularizers.get(config.kernel_regularizer)
        self.bias_regularizer = regularizers.get(config.bias_regularizer)
        linears, self.activation, self.dropout_rates = _layers(module.network)
        self.own_params: list[torch.Tensor] = []
        for linear in linears:
            self.own_params += [linear.weight, linear.bias]
        self.optimizer_resume: dict[str, Any] | None = None
        stopping = config.early_stopping
        self.early_stopping = None if stopping is None else KerasEarlyStopping(stopping)
        directory = spec.checkpoint_dir
        self.best_saver = None
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            self.best_saver = KerasModelCheckpoint(config.checkpoint, directory)
        self.pending_best: dict[str, Any] | None = None
        self.last_saved = False
        self.last_write = time.monotonic()
        self.pruned = self.interrupted = False
        self.resumed_from: int | None = None
        if spec.resume_from is not None:
            self._resume(Path(spec.resume_from), device)
        if len(module.progress.history) >= config.max_epochs:
            self._finish()

    def _resume(self, path: Path, device: torch.device) -> None:
        state = torch.load(path, map_location=device, weights_only=True)
        self.module.load_state_dict(state["state_dict"])
        self.module.on_load_checkpoint(state)
        self.optimizer_resume = state["optimizer_states"][0]
        callbacks = state["callbacks"]
        if self.early_stopping is not None and "early_stopping" in callbacks:
            self.early_stopping.load_state_dict(callbacks["early_stopping"])
        if self.best_saver is not None and "best_saver" in callbacks:
            self.best_saver.load_state_dict(callbacks["best_saver"])
        self.dropout_generator.set_state(state["hpsearch"]["dropout_state"].cpu())
        self.resumed_from = len(self.module.progress.history)

    def end_epoch(self, train: dict[str, float], val: dict[str, float]) -> None:
        progress = self.module.progress
        epoch = len(progress.history) + 1
        self.module.record_epoch(epoch, train, val, self.factory.learning_rate)

    def close_epoch(
        self, stop_requested: bool, optimizer_state: Callable[[], dict[str, Any]]
    ) -> None:
        """The end-of-epoch callbacks, in a lone trial's order; finishes the member when
        one of them (or divergence, or `max_epochs`) ends its training."""
        progress = self.module.progress
        latest = progress.latest
        # One snapshot of this epoch's weights and optimizer state, shared by EarlyStopping's
        # best weights, the best checkpoint and the resume state (none mutates it).
        weights = functools.cache(self._weights)
        optimizer_state = functools.cache(optimizer_state)
        diverged = progress.diverged_at is not None
        stop = diverged
        if self.spec.on_epoch is not None:
            self.spec.on_epoch(epoch_record(latest))
        if not diverged:
            reporter = self.spec.reporter
            if reporter is not None:
                reporter.report(progress.epoch_index + 1, latest[self.config.objective])
                if reporter.should_prune():
                    self.pruned = stop = True
            if stop_requested:
                self.interrupted = stop = True
            if self.early_stopping is not None and self.early_stopping.update(
                progress.epoch_index, latest, weights
            ):
                stop = True
            if self.best_saver is not None and self.best_saver.should_save(latest):
                full = not self.config.checkpoint.save_weights_only
                self.pending_best = self._checkpoint(weights, optimizer_state if full else None)
                self.best_saver.saved = True
            final = stop or len(progress.history) >= self.config.max_epochs
            every_s = self.config.checkpoint.resume_every_s
            if self.spec.checkpoint_dir is not None and (
                final or time.monotonic() - self.last_write >= every_s
            ):
                self._write_resume_state(weights, optimizer_state)
        if stop or len(progress.history) >= self.config.max_epochs:
            self._finish()

    def _weights(self) -> dict[str, torch.Tensor]:
        return {key: value.detach().clone() for key, value in self.module.state_dict().items()}

    def _checkpoint(
        self,
        weights: Callable[[], dict[str, torch.Tensor]],
        optimizer_state: Callable[[], dict[str, Any]] | None,
    ) -> dict[str, Any]:
        """A Lightning checkpoint of the member's module (`TrialModule.load_from_checkpoint`
        reads it) with the snapshot `weights` gives; with `optimizer_state` (a snapshot too,
        `PackOptimizer.member_state`), also the optimizer and callback states a resume
        needs."""
        module, progress = self.module, self.module.progress
        checkpoint: dict[str, Any] = {
            "epoch": max(len(progress.history) - 1, 0),
            "global_step": progress.optimizer_steps,
            "pytorch-lightning_version": lightning.__version__,
            "state_dict": weights(),
            "hparams_name": "kwargs",
            "hyper_parameters": dict(module.hparams),
        }
        module.on_save_checkpoint(checkpoint)
        if optimizer_state is not None:
            callbacks: dict[str, Any] = {}
            if self.early_stopping is not None:
                callbacks["early_stopping"] = self.early_stopping.state_dict()
            if self.best_saver is not None:
                callbacks["best_saver"] = self.best_saver.state_dict()
            checkpoint["optimizer_states"] = [optimizer_state()]
            checkpoint["callbacks"] = callbacks
            checkpoint["hpsearch"][PACK_MEMBER_MARK] = True
            checkpoint["hpsearch"]["dropout_state"] = self.dropout_generator.get_state()
        return checkpoint

    def _write_resume_state(
        self,
        weights: Callable[[], dict[str, torch.Tensor]],
        optimizer_state: Callable[[], dict[str, Any]],
    ) -> None:
        assert self.spec.checkpoint_dir is not None
        io = AtomicCheckpointIO()
        # The best file first, so the two files on disk describe the same moment.
        self._flush_best()
        last = self.spec.checkpoint_dir / "last.ckpt"
        io.save_checkpoint(self._checkpoint(weights, optimizer_state), last)
        self.last_write = time.monotonic()
        self.last_saved = True

    def _flush_best(self) -> None:
        if self.pending_best is not None and self.best_saver is not None:
            AtomicCheckpointIO().save_checkpoint(self.pending_best, self.best_saver.path)
            self.pending_best = None

    def _finish(self) -> None:
        """What a lone trial's `on_train_end` does: restore the best weights, evaluate every
        split; then the result."""
        module, progress = self.module, self.module.progress
        for param in self.own_params:  # leave the pack's storage before weights are restored
            param.data = param.data.clone()
        stopping = self.early_stopping
        if stopping is not None and stopping.config.restore_best_weights and stopping.best_weights:
            module.load_state_dict(stopping.best_weights)
        if progress.diverged_at is None and progress.history:
            data = module.data
            assert data is not None
            splits = {"train": data.train, "val": data.val, "test": data.test}
            progress.final_metrics = {
                name: module.evaluate(split) for name, split in splits.items() if split is not None
            }
        self._flush_best()
        directory = self.spec.checkpoint_dir
        outcome = Outcome(
            pruned=self.pruned,
            interrupted=self.interrupted,
            stopped_early=stopping is not None and stopping.stopped_epoch > 0,
            best_checkpoint=(
                str(self.best_saver.path)
                if self.best_saver is not None and self.best_saver.saved
                else None
            ),
            last_checkpoint=(
                str(directory / "last.ckpt") if directory is not None and self.last_saved else None
            ),
        )
        assert module.data is not None
        self.result = trial_result(
            self.config,
            progress,
            module.data,
            outcome,
            self.resumed_from,
            self.started,
            trainable_parameters(module.network),
        )


def _layers(network: nn.Module) -> tuple[list[nn.Linear], nn.Module, list[float]]:
    """The built-in MLP's Linear layers, its activation module and, per hidden layer, the
    dropout rate after it (0: no Dropout module there)."""
    linears: list[nn.Linear] = []
    activation: nn.Module | None = None
    rates: list[float] = []
    for child in network.children():
        if isinstance(child, nn.Linear):
            linears.append(child)
            rates.append(0.0)
        elif isinstance(child, nn.Dropout):
            rates[-1] = float(child.p)
        elif not isinstance(child, nn.Flatten):
            activation = child
    if activation is None:
        activation = nn.Identity()
    return linears, activation, rates[:-1]
