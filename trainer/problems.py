"""Training problems a deep-learning course lists, detected from a trial's epochs.

Each detection names the problem, the epoch and the evidence, and carries a one-line hint of
the technique that usually helps. Thresholds live in `DiagnosisConfig` (the spec's `diagnosis`
block):

- `not_learning`: the training loss fell by less than `not_learning_min_drop` (relative,
  default 1 %) from epoch 1 to epoch `not_learning_epochs` (3), and the model underfits;
- `vanishing_gradients`: the median over epochs of the first kernel layer's gradient norm
  over the last one's is below `vanishing_ratio` (1e-3);
- `exploding_gradients`: some layer's gradient norm exceeded `exploding_norm` (1e3);
- `dead_units`: the fraction of ReLU units never active on the validation set exceeded
  `max_dead_units` (0.5) in the last epoch;
- `diverged`: the loss became NaN/inf (`run_trial`'s status).

Gradient norms are those of the last optimizer step of each epoch (no per-step copy), per
kernel layer (`models.kernel_layers`) and separately for kernels and biases. Only `nn.ReLU`
units are counted for `dead_units`: leaky and exponential units never stop passing gradient.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from trainer.config import DiagnosisConfig

HINTS = {
    "not_learning": "the training loss barely moved: with a zeros or constant initializer every "
    "hidden unit learns the same thing (use glorot_uniform or he_normal); else try a larger "
    "learning rate",
    "vanishing_gradients": "gradients shrink towards the input: He/Glorot initialization, "
    "ReLU-family activations, batch_norm or fewer layers usually help",
    "exploding_gradients": "gradients grew very large: a smaller learning rate, batch_norm or a "
    "smaller initializer scale usually help",
    "dead_units": "many ReLU units never fire: a smaller learning rate, he_normal, or "
    "leaky_relu/elu usually help",
    "diverged": "the loss became NaN/inf: a smaller learning rate or initializer scale usually "
    "helps",
}


@dataclass(frozen=True)
class Problem:
    label: str
    epoch: int | None
    evidence: str
    hint: str


@dataclass(frozen=True)
class EpochSignals:
    """What one epoch recorded for the detectors."""

    epoch: int
    loss: float
    kernel_grad_norms: Sequence[float] | None = None
    dead_units: float | None = None


def detect_problems(
    epochs: Sequence[EpochSignals],
    config: DiagnosisConfig,
    underfits: bool,
    diverged_at: int | None = None,
) -> list[Problem]:
    """The problems `epochs` show (`underfits`: the fit diagnosis found high train error)."""
    problems: list[Problem] = []
    if diverged_at is not None:
        epochs = [e for e in epochs if e.epoch < diverged_at]  # its signals are NaN
        problems.append(
            Problem(
                "diverged",
                diverged_at,
                f"the loss was non-finite at epoch {diverged_at}",
                HINTS["diverged"],
            )
        )
    finite = [e for e in epochs if math.isfinite(e.loss)]
    window = config.not_learning_epochs
    if underfits and len(finite) >= window and finite[0].loss > 0:
        first, later = finite[0].loss, finite[window - 1].loss
        drop = (first - later) / first
        if drop < config.not_learning_min_drop:
            problems.append(
                Problem(
                    "not_learning",
                    finite[window - 1].epoch,
                    f"training loss {first:.4g} at epoch 1 and {later:.4g} at epoch {window} "
                    f"(fell {100 * drop:.2g}%, less than {100 * config.not_learning_min_drop:g}%)",
                    HINTS["not_learning"],
                )
            )
    ratios: list[tuple[int, float]] = []
    for signals in epochs:
        norms = signals.kernel_grad_norms
        if norms is None or len(norms) < 2 or not all(math.isfinite(n) for n in norms):
            continue
        largest = max(norms)
        if largest > config.exploding_norm and not any(
            p.label == "exploding_gradients" for p in problems
        ):
            layer = list(norms).index(largest)
            problems.append(
                Problem(
                    "exploding_gradients",
                    signals.epoch,
                    f"kernel gradient norm {largest:.3g} in layer {layer + 1} of {len(norms)} at "
                    f"epoch {signals.epoch} (above {config.exploding_norm:g})",
                    HINTS["exploding_gradients"],
                )
            )
        if norms[-1] > 0:
            ratios.append((signals.epoch, norms[0] / norms[-1]))
        elif norms[0] == 0:
            ratios.append((signals.epoch, 0.0))
    if ratios:
        median = statistics.median(ratio for _, ratio in ratios)
        if median < config.vanishing_ratio:
            problems.append(
                Problem(
                    "vanishing_gradients",
                    ratios[-1][0],
                    f"first/last layer kernel gradient norm ratio {median:.3g} (median over "
                    f"{len(ratios)} epochs; below {config.vanishing_ratio:g})",
                    HINTS["vanishing_gradients"],
                )
            )
    last = next((e for e in reversed(epochs) if e.dead_units is not None), None)
    if last is not None and last.dead_units is not None and last.dead_units > config.max_dead_units:
        problems.append(
            Problem(
                "dead_units",
                last.epoch,
                f"{100 * last.dead_units:.0f}% of ReLU units never active on the validation set "
                f"at epoch {last.epoch} (above {100 * config.max_dead_units:g}%)",
                HINTS["dead_units"],
            )
        )
    return problems
