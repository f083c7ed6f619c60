"""Trial overhead: `run_trial` (Lightning + EarlyStopping + ModelCheckpoint) vs a plain loop.

Default: the digits MLP 64-128-128-10, batch 64, Adam (lr 1e-3), 20 epochs, trained by
`run_trial` and by a plain PyTorch loop over the same device tensors, alternated in one run so
both see the same machine noise. The plain loop also evaluates the validation split every
epoch, as any loop that early-stops must. Prints median and min-max of each, and the ratio.

`--model`/`--model-config` and `--dataset`/`--dataset-config` bench any registered (plugin)
model and dataset instead; `--stream` adds `run_trial` over the DataLoader path
(`data_loader.in_memory: false`) on the same data, to price streaming against device tensors.

    .venv/bin/python bench/trial_overhead.py [--repeats 7] [--threads 1] [--device cpu]
    .venv/bin/python bench/trial_overhead.py --model cnn \\
        --augmentation '{"random_translation": 0.1, "random_rotation": 0.05, "random_zoom": 0.1}'
    .venv/bin/python bench/trial_overhead.py --model resmlp --model-config '{"width": 128}' \\
        --dataset diabetes --stream
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from trainer import TrialConfig, networks, run_trial
from trainer.config import (
    AugmentationConfig,
    CheckpointConfig,
    DatasetConfig,
    EarlyStoppingConfig,
    ModelConfig,
)
from trainer.data import DataSplits, Split, load_splits
from trainer.losses import loss_function, resolve_loss
from trainer.models import build_network

EPOCHS = 20
BATCH = 64


def bench_config(
    model: ModelConfig,
    dataset: DatasetConfig,
    augmentation: AugmentationConfig | None = None,
) -> TrialConfig:
    return TrialConfig(
        dataset=dataset,
        model=model,
        optimizer={"class_name": "adam", "config": {"learning_rate": 1e-3}},
        batch_size=BATCH,
        max_epochs=EPOCHS,
        # patience beyond max_epochs: EarlyStopping runs every epoch but never cuts the run short
        early_stopping=EarlyStoppingConfig(patience=EPOCHS, restore_best_weights=True),
        checkpoint=CheckpointConfig(save_best_only=True),
        augmentation=augmentation or AugmentationConfig(),
    )


def plain_loop(model: ModelConfig, data: DataSplits[Split], device: torch.device) -> float:
    torch.manual_seed(0)
    network = build_network(model, data.input_shape, data.n_outputs).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3, eps=1e-7)
    criterion = loss_function(resolve_loss(None, data.task))
    train, val = data.train, data.val
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for _ in range(EPOCHS):
        network.train()
        order = torch.randperm(len(train), generator=generator).to(device)
        for start in range(0, len(train), BATCH):
            index = order[start : start + BATCH]
            loss = criterion(network(train.X[index]), train.y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
        network.eval()
        with torch.no_grad():
            float(criterion(network(val.X), val.y))
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
        f"{name:<14} median {statistics.median(values):.3f} s  "
        f"[{min(values):.3f}-{max(values):.3f}]  n={len(values)}"
    )


def ratio_line(name: str, times: list[float], reference: list[float]) -> str:
    ratios = [t / p for t, p in zip(times, reference, strict=True)]
    return (
        f"{name}: ratio of medians {statistics.median(times) / statistics.median(reference):.3f}; "
        f"per-pair ratio median {statistics.median(ratios):.3f} "
        f"[{min(ratios):.3f}-{max(ratios):.3f}]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="mlp", help="a registered model (built-in or plugin)")
    parser.add_argument("--model-config", default=None, help="its config as JSON")
    parser.add_argument("--dataset", default="digits", help="a registered dataset")
    parser.add_argument("--dataset-config", default="{}", help="its config as JSON")
    parser.add_argument("--stream", action="store_true", help="also run the DataLoader path")
    parser.add_argument(
        "--augmentation",
        default=None,
        help='also run run_trial with this augmentation, as JSON (e.g. {"random_rotation": 0.05})',
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device.startswith("cuda") else "cpu")
    default_config = {"hidden_units": [128, 128]} if args.model == "mlp" else {}
    model = ModelConfig(
        type=args.model,
        config=json.loads(args.model_config) if args.model_config else default_config,
    )
    dataset = DatasetConfig(name=args.dataset, config=json.loads(args.dataset_config))
    image = {"flat": False, "image": True, "any": None}[networks.input_kind(model.type)]
    data = load_splits(dataset, image=image).to(device)
    config = bench_config(model, dataset)
    streamed = bench_config(model, dataset.model_copy(update={"data_loader": {"in_memory": False}}))
    contestants: dict[str, Callable[[], float]] = {
        "plain": lambda: plain_loop(model, data, device),
        "run_trial": lambda: with_run_trial(config, args.device),
    }
    if args.stream:
        contestants["run_trial/stream"] = lambda: with_run_trial(streamed, args.device)
    if args.augmentation:
        augmented = bench_config(
            model, dataset, AugmentationConfig(**json.loads(args.augmentation))
        )
        contestants["run_trial/augmented"] = lambda: with_run_trial(augmented, args.device)
    for run in contestants.values():  # warm-up: first-call allocations and lazy imports
        run()
    times: dict[str, list[float]] = {name: [] for name in contestants}
    order: list[tuple[str, Any]] = list(contestants.items())
    for repeat in range(args.repeats):
        for name, run in order if repeat % 2 == 0 else reversed(order):
            times[name].append(run())
    print(
        f"device {args.device}, torch threads {args.threads}, torch {torch.__version__}, "
        f"model {model.type} {json.dumps(model.config)}, dataset {dataset.name} "
        f"({len(data.train)} train rows, {data.task})"
    )
    for name, values in times.items():
        print(describe(name, values))
    print(ratio_line("run_trial / plain", times["run_trial"], times["plain"]))
    if args.stream:
        print(ratio_line("stream / plain", times["run_trial/stream"], times["plain"]))
        print(ratio_line("stream / run_trial", times["run_trial/stream"], times["run_trial"]))
    if args.augmentation:
        print(ratio_line("augmented / run_trial", times["run_trial/augmented"], times["run_trial"]))


if __name__ == "__main__":
    main()
