"""Training throughput on CPU: triplets/s for the small preset (both passes, forward + backward + AdamW
step) at 128 and 256 px crops, and the full preset's forward latency at 256 px.

    python -m benchmarks.bench_train [--threads 2] [--steps 4]

Writes benchmarks/results/train.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import write_results
from pipeline.configs import TrainModelConfig
from ssh_model.network import count_parameters, ssh_full, ssh_small
from ssh_model.train import TrainConfig, batch_to_tensors, make_optimizer, make_scheduler, train_step

LR = TrainModelConfig().lr
RESULTS = Path(__file__).parent / "results" / "train.json"


def random_batch(rng: np.random.Generator, batch: int, size: int) -> dict[str, np.ndarray]:
    keys = ("content_a", "reference_a", "reference_b", "content_b")
    return {k: rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8) for k in keys}


def train_throughput(size: int, batch: int, steps: int, warmup: int = 1) -> dict:
    """Triplets/s of full training steps (batch_to_tensors + train_step) for the small preset."""
    torch.manual_seed(0)
    model = ssh_small()
    cfg = TrainConfig(steps=steps + warmup, batch_size=batch, lr=LR, warmup_steps=1, log_every=10, seed=0)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg)
    rng = np.random.default_rng(0)
    batches = [random_batch(rng, batch, size) for _ in range(steps + warmup)]
    times = []
    for i, data in enumerate(batches):
        start = time.perf_counter()
        losses, _ = train_step(model, batch_to_tensors(data), optimizer, scheduler, cfg)
        losses["total"].item()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    step_s = float(np.median(times))
    return {
        "preset": "small",
        "params": count_parameters(model),
        "crop": size,
        "batch": batch,
        "steps": steps,
        "step_s_median": round(step_s, 4),
        "triplets_per_s": round(batch / step_s, 2),
    }


def forward_latency(size: int, repeats: int) -> dict:
    """Median eval-mode forward time of the full (released-size) network, batch 1."""
    torch.manual_seed(0)
    model = ssh_full().eval()
    x = torch.rand(1, 3, size, size) * 2 - 1
    times = []
    with torch.inference_mode():
        model(x, x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x, x)
            times.append(time.perf_counter() - start)
    return {
        "preset": "full",
        "params": count_parameters(model),
        "size": size,
        "forward_ms_median": round(1000 * float(np.median(times)), 1),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per crop size")
    parser.add_argument("--repeats", type=int, default=5, help="timed full-network forwards")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": platform.machine(),
        "train_small": [train_throughput(128, 8, args.steps), train_throughput(256, 4, args.steps)],
        "forward_full": forward_latency(256, args.repeats),
    }
    print(json.dumps(result, indent=2))
    write_results(args.out, result)
    return result


if __name__ == "__main__":
    main()
