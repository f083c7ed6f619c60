"""Trial packing: 8 digits-MLP trials trained as one fused pack vs one after another.

The same 8 configurations (one network shape, batch size and optimizer class; their own
learning rate, dropout, L2 strength, initializer and seed, as a technique search samples
them), each with EarlyStopping, ModelCheckpoint and a resume checkpoint as a worker runs them:
trained one after another through `run_trial`, then as one pack through `run_pack`, alternated
in one run so both see the same machine noise. Prints the wall times (median, min-max), the
throughput ratio and how far each member's results are from its lone run.

    .venv/bin/python bench/packing.py [--repeats 5] [--threads 1] [--device cpu] \\
        [--members 8] [--optimizer adam] [--batch-size 64] [--hidden 128,128]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from trainer import TrialConfig, TrialResult, run_trial
from trainer.config import CheckpointConfig, DatasetConfig, EarlyStoppingConfig, ModelConfig
from trainer.packing import PackMember, run_pack

INITIALIZERS = ("glorot_uniform", "he_normal", "orthogonal", "lecun_normal")


def configs(
    members: int, optimizer: str, batch_size: int, hidden: tuple[int, ...], epochs: int
) -> list[TrialConfig]:
    generator = torch.Generator().manual_seed(7)
    chosen = []
    for index in range(members):
        draw = torch.rand(3, generator=generator).tolist()
        chosen.append(
            TrialConfig(
                dataset=DatasetConfig(name="digits", validation_split=0.2, test_split=0.2),
                model=ModelConfig(type="mlp", hidden_units=list(hidden), dropout=0.5 * draw[0]),
                optimizer={
                    "class_name": optimizer,
                    "config": {"learning_rate": 10 ** (-4 + 2.5 * draw[1])},
                },
                kernel_initializer=INITIALIZERS[index % len(INITIALIZERS)],
                kernel_regularizer={"class_name": "l2", "config": {"l2": 10 ** (-6 + 4 * draw[2])}},
                batch_size=batch_size,
                max_epochs=epochs,
                seed=index,
                early_stopping=EarlyStoppingConfig(
                    monitor="val_data_loss", patience=3, restore_best_weights=True
                ),
                checkpoint=CheckpointConfig(monitor="val_data_loss", save_best_only=True),
            )
        )
    return chosen


def one_by_one(
    trials: list[TrialConfig], device: str, root: Path
) -> tuple[float, float, list[TrialResult]]:
    started, cpu = time.perf_counter(), time.process_time()
    results = [
        run_trial(config, checkpoint_dir=root / f"alone-{i}", device=device)
        for i, config in enumerate(trials)
    ]
    return time.perf_counter() - started, time.process_time() - cpu, results


def packed(
    trials: list[TrialConfig], device: str, root: Path
) -> tuple[float, float, list[TrialResult]]:
    started, cpu = time.perf_counter(), time.process_time()
    members = [
        PackMember(config, checkpoint_dir=root / f"pack-{i}") for i, config in enumerate(trials)
    ]
    results = run_pack(members, device=device)
    return time.perf_counter() - started, time.process_time() - cpu, results


def largest_gap(alone: list[TrialResult], pack: list[TrialResult]) -> tuple[float, int]:
    """The largest relative difference of an epoch's val_data_loss, and how many members
    ended with another status or epoch count than alone."""
    gap, different = 0.0, 0
    for a, b in zip(alone, pack, strict=True):
        if a.status != b.status or a.epochs_run != b.epochs_run:
            different += 1
        for ra, rb in zip(a.history, b.history, strict=False):
            x, y = ra.val_data_loss, rb.val_data_loss
            if x is not None and y is not None and math.isfinite(x) and math.isfinite(y):
                gap = max(gap, abs(x - y) / max(abs(x), 1e-12))
    return gap, different


def spread(seconds: list[float]) -> str:
    return f"{statistics.median(seconds):.3f} s [{min(seconds):.3f}-{max(seconds):.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", default="128,128")
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hidden = tuple(int(units) for units in args.hidden.split(","))
    trials = configs(args.members, args.optimizer, args.batch_size, hidden, args.epochs)
    alone_s: list[float] = []
    pack_s: list[float] = []
    alone_cpu: list[float] = []
    pack_cpu: list[float] = []
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        run_pack([PackMember(trials[0])], device=args.device)  # warm-up: imports, data cache
        run_trial(trials[0], device=args.device)
        for _ in range(args.repeats):
            seconds, cpu, alone = one_by_one(trials, args.device, root)
            alone_s.append(seconds)
            alone_cpu.append(cpu)
            seconds, cpu, pack = packed(trials, args.device, root)
            pack_s.append(seconds)
            pack_cpu.append(cpu)
    epochs = sum(result.epochs_run for result in alone)
    gap, different = largest_gap(alone, pack)
    print(
        f"{args.members} digits-MLP trials {args.hidden}, {args.optimizer}, batch "
        f"{args.batch_size}, {epochs} epochs in all, device {args.device}, "
        f"{args.threads} thread(s), n={args.repeats}"
    )
    print(f"one after another: {spread(alone_s)}")
    print(f"packed:            {spread(pack_s)}")
    ratios = [a / p for a, p in zip(alone_s, pack_s, strict=True)]
    print(
        f"throughput ratio (per pair): {statistics.median(ratios):.2f} "
        f"[{min(ratios):.2f}-{max(ratios):.2f}]"
    )
    if args.device == "cpu":
        cpu_ratios = [a / p for a, p in zip(alone_cpu, pack_cpu, strict=True)]
        print(
            f"the same in process CPU time: one after another {spread(alone_cpu)}, packed "
            f"{spread(pack_cpu)}, ratio {statistics.median(cpu_ratios):.2f} "
            f"[{min(cpu_ratios):.2f}-{max(cpu_ratios):.2f}]"
        )
    print(
        f"members vs alone: largest relative val_data_loss gap {gap:.2e}; "
        f"{different} of {args.members} ended otherwise"
    )


if __name__ == "__main__":
    main()
