"""Trial overhead: `run_trial` (Lightning + EarlyStopping + ModelCheckpoint) vs a plain loop.

The digits MLP 64-128-128-10, batch 64, Adam (lr 1e-3), 20 epochs, trained by `run_trial` and
by a plain PyTorch loop over the same device tensors, alternated in one run so both see the
same machine noise. The plain loop also evaluates the validation split every epoch, as any
loop that early-stops must. Prints median and min-max of each, and the ratio.

    .venv/bin/python bench/trial_overhead.py [--repeats 7] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from torch.nn import functional as F

from trainer import TrialConfig, run_trial
from trainer.config import CheckpointConfig, EarlyStoppingConfig, ModelConfig
from trainer.data import DataSplits, load_splits
from trainer.models import build_network

EPOCHS = 20
BATCH = 64


def bench_config() -> TrialConfig:
    return TrialConfig(
        model=ModelConfig(hidden_units=(128, 128)),
        optimizer={"class_name": "adam", "config": {"learning_rate": 1e-3}},
        batch_size=BATCH,
        max_epochs=EPOCHS,
        # patience beyond max_epochs: EarlyStopping runs every epoch but never cuts the run short
        early_stopping=EarlyStoppingConfig(patience=EPOCHS, restore_best_weights=True),
        checkpoint=CheckpointConfig(save_best_only=True),
    )


def plain_loop(data: DataSplits, device: torch.device) -> float:
    torch.manual_seed(0)
    network = build_network(ModelConfig(hidden_units=(128, 128)), data.input_shape, 10).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3, eps=1e-7)
    train, val = data.train, data.val
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for _ in range(EPOCHS):
        network.train()
        order = torch.randperm(len(train), generator=generator).to(device)
        for start in range(0, len(train), BATCH):
            index = order[start : start + BATCH]
            loss = F.cross_entropy(network(train.X[index]), train.y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
        network.eval()
        with torch.no_grad():
            float(F.cross_entropy(network(val.X), val.y))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def with_run_trial(config: TrialConfig, device: str) -> float:
    with tempfile.TemporaryDirectory() as checkpoint_dir:
        started = time.perf_counter()
        result = run_trial(config, checkpoint_dir=checkpoint_dir, device=device)
        elapsed = time.perf_counter() - started
    assert result.epochs_run == EPOCHS, result.epochs_run
    return elapsed


def describe(name: str, values: list[float]) -> str:
    return (
        f"{name:<10} median {statistics.median(values):.3f} s  "
        f"[{min(values):.3f}-{max(values):.3f}]  n={len(values)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device.startswith("cuda") else "cpu")
    data = load_splits(bench_config().dataset).to(device)
    config = bench_config()
    plain_loop(data, device)  # warm-up: first-call allocations and lazy imports
    with_run_trial(config, args.device)
    plain: list[float] = []
    lightning: list[float] = []
    for repeat in range(args.repeats):
        pair = [("plain", plain_loop), ("run_trial", None)]
        for name, _ in pair if repeat % 2 == 0 else reversed(pair):
            if name == "plain":
                plain.append(plain_loop(data, device))
            else:
                lightning.append(with_run_trial(config, args.device))
    ratios = [t / p for t, p in zip(lightning, plain, strict=True)]
    print(f"device {args.device}, torch threads {args.threads}, torch {torch.__version__}")
    print(describe("plain", plain))
    print(describe("run_trial", lightning))
    print(
        f"ratio of medians {statistics.median(lightning) / statistics.median(plain):.3f}; "
        f"per-pair ratio median {statistics.median(ratios):.3f} "
        f"[{min(ratios):.3f}-{max(ratios):.3f}]"
    )


if __name__ == "__main__":
    main()
