"""Seed noise: one configuration of the search-quality workload trained with k training seeds.

How much of a trial's objective is the training seed's (initial weights, shuffling, dropout)
rather than its parameters: the figure that bounds what `search_quality.py`'s "every pair"
target can ask of a search. The configuration is the workload's first trial (Keras's defaults
for the searched parameters of examples/digits-techniques.json), data split fixed.

    .venv/bin/python bench/seed_noise.py [--seeds 12]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import torch

from service.studies.spec import StudySpec
from trainer import run_trial

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits-techniques.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--max-epochs", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = json.loads(EXAMPLE.read_text())
    spec["budget"] = {"n_trials": 1, "max_epochs": args.max_epochs}
    template = StudySpec.model_validate(spec).template()
    params = template.default_params()
    values = []
    for seed in range(args.seeds):
        config = dataclasses.replace(template.config_for(params), seed=seed)
        value = run_trial(config, device="cpu").objective_value
        assert value is not None, f"seed {seed} diverged"
        values.append(value)
    print(f"params {params}")
    print(
        f"{template.objective} over {args.seeds} training seeds: median "
        f"{statistics.median(values):.4f} [{min(values):.4f}-{max(values):.4f}], "
        f"stdev {statistics.stdev(values):.4f}"
    )


if __name__ == "__main__":
    main()
