"""Benchmark: distributed training throughput on CPU (Ray Train, small preset), 1 vs 2 workers, the loader.

    python -m benchmarks.bench_training_dist [--steps 20] [--crop 128] [--batch 8] [--pairs 2]

Measures, on this machine:
- the loader alone: ``TripletDataset`` batches decoded per second in one process (what one training
  worker's in-process loader can deliver);
- training samples/s (triplets per second, all workers) with the ``small`` preset for 1 worker x 1
  CPU, 2 workers x 1 CPU (DDP over gloo) and 1 worker x 2 CPU threads, from the workers' progress
  events after a warm-up (worker start-up excluded);
- the 2-worker / 1-worker ratio (target >= 1.6): best against best of the interleaved runs, each
  adjacent pair's ratio and their median (a pair shares the machine's load of its minutes), and normalised by
  the CPU time rank 0 actually got (the machine is shared: other jobs take cores away), and whether
  the loader could be the bottleneck (loader rate vs what one worker consumes).
The shards are made from the bundled sample photos with the real triplet maker. Writes
``benchmarks/results/training_dist.json``. The machine is shared: its load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import write_results
from pipeline.configs import TrainModelConfig
from pipeline.ray_runtime import ray_init
from ssh_model.dataset import TripletDataset
from ssh_model.images import read_image
from ssh_model.lut import lut_bank
from ssh_model.samples import sample_photo_paths
from ssh_model.shards import ShardWriter, triplet_row
from ssh_model.train import TrainConfig
from ssh_model.triplets import make_triplet

RESULTS = Path(__file__).resolve().parent / "results" / "training_dist.json"
WARMUP_STEPS = 4
LOG_EVERY = 2
LR = TrainModelConfig().lr


def make_shards(root: str, crop: int, per_image: int, seed: int = 0) -> int:
    """Triplet shards from the bundled photos under ``root/train``; returns the triplet count."""
    bank = lut_bank(seed, count=16, size=17)
    rng = np.random.default_rng(seed)
    count = 0
    for index, path in enumerate(sample_photo_paths()):
        photo = read_image(path)
        with ShardWriter(f"{root}/train/part-{index:05d}.parquet", rows_per_group=16) as writer:
            for k in range(per_image):
                first, second = (int(i) for i in rng.choice(len(bank), size=2, replace=False))
                triplet = make_triplet(photo, bank[first], bank[second], rng, crop_size=crop)
                writer.write(triplet_row(triplet, image_id=f"{index:064x}", split="train", k=k, seed=seed))
                count += 1
    return count


def loader_rate(root: str, batch: int, seconds: float = 5.0) -> float:
    """Triplets per second ``TripletDataset`` decodes in this process (0 loader workers)."""
    dataset = TripletDataset(root, split="train", batch_size=batch, shuffle=True, rank=0, world_size=1)
    decoded, epoch = 0, 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        dataset.set_epoch(epoch)
        for item in dataset:
            decoded += len(item["triplet_id"])
            if time.perf_counter() - started >= seconds:
                break
        epoch += 1
    return decoded / (time.perf_counter() - started)


def train_rate(root: str, storage: str, workers: int, threads: int, steps: int, batch: int) -> dict[str, Any]:
    """Steady-state training samples/s (all workers) from the progress events after the warm-up, and how
    much CPU rank 0 got in that window (``utilisation`` = CPU seconds / wall seconds; 1.0 = a free core)."""
    from pipeline.training import run_training
    from pipeline.training_worker import TrainingJob

    events: list[dict[str, Any]] = []
    # A progress event every 2 steps (train-model's default is 20): each one makes rank 0 sync with the
    # host and message the driver while rank 1 waits at the next all-reduce.
    cfg = TrainConfig(steps=steps, batch_size=batch, lr=LR, log_every=LOG_EVERY, warmup_steps=1, seed=0)
    job = TrainingJob(data=root, model="small", train=cfg, checkpoint_every=steps, loader_workers=0, threads=threads)
    name = f"bench-{workers}x{threads}-{time.time_ns()}"
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    outcome = run_training(
        job,
        run_name=name,
        storage_root=storage,
        num_workers=workers,
        use_gpu=False,
        max_failures=0,
        resource_wait_s=TrainModelConfig().resource_wait_s,
        on_event=lambda e: events.append(e) if e["kind"] == "progress" else None,
    )
    wall = time.perf_counter() - started
    steady = [e for e in events if e["step"] > WARMUP_STEPS]
    first, last = steady[0], steady[-1]
    seconds = max(last["time"] - first["time"], 1e-9)
    steps_done = last["step"] - first["step"]
    cpu = last["cpu_s"] - first["cpu_s"]
    return {
        "workers": workers,
        "threads_per_worker": threads,
        "steps": outcome.steps,
        "batch_per_worker": batch,
        "samples_per_s": round(steps_done * batch * workers / seconds, 2),
        "step_s": round(seconds / max(steps_done, 1), 4),
        "rank0_cpu_utilisation": round(cpu / seconds, 2),
        "samples_per_cpu_s_per_worker": round(steps_done * batch / max(cpu, 1e-9), 2),
        "load_average_before": round(load_before, 2),
        "wall_s_including_startup": round(wall, 1),
    }


def best(runs: list[dict[str, Any]], workers: int, threads: int) -> dict[str, Any]:
    return max(
        (r for r in runs if (r["workers"], r["threads_per_worker"]) == (workers, threads)), key=lambda r: r["samples_per_s"]
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_training_dist")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--per-image", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=2, help="interleaved (1 worker, 2 workers) run pairs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import ray

    with tempfile.TemporaryDirectory() as folder:
        root = f"{folder}/triplets/bench"
        triplets = make_shards(root, args.crop, args.per_image)
        loader = loader_rate(root, args.batch)
        ray_init(num_cpus=2)
        try:  # interleaved pairs, so a burst of load from other jobs hits both configurations alike
            order = [(1, 1), (2, 1)] * args.pairs + [(1, 2)]
            runs = [train_rate(root, f"{folder}/training", w, t, args.steps, args.batch) for w, t in order]
        finally:
            ray.shutdown()
    one, two, threaded = best(runs, 1, 1), best(runs, 2, 1), best(runs, 1, 2)
    paired = [runs[i + 1]["samples_per_s"] / runs[i]["samples_per_s"] for i in range(0, 2 * args.pairs, 2)]
    per_worker_need = max(r["samples_per_s"] / r["workers"] for r in runs)
    efficiency = two["samples_per_cpu_s_per_worker"] / one["samples_per_cpu_s_per_worker"]
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
            "note": "2 shared cores; other jobs ran at the same time; best of the interleaved runs",
        },
        "setup": {
            "preset": "small",
            "crop": args.crop,
            "batch_per_worker": args.batch,
            "steps": args.steps,
            "warmup_steps_excluded": WARMUP_STEPS,
            "log_every": LOG_EVERY,
            "pairs": args.pairs,
            "triplets": triplets,
            "backend": "gloo (CPU)",
        },
        "loader_samples_per_s_one_process": round(loader, 1),
        "training": runs,
        "best": {"one_worker": one, "two_workers": two, "one_worker_two_threads": threaded},
        "two_vs_one_worker": round(two["samples_per_s"] / one["samples_per_s"], 3),
        "two_vs_one_worker_each_pair": [round(r, 3) for r in paired],
        "two_vs_one_worker_median_pair": round(float(np.median(paired)), 3),
        "two_vs_one_worker_cpu_normalised": round(2 * efficiency, 3),
        "cpu_normalised_note": "2 x (samples per CPU-second of a 2-worker rank / of the 1-worker run): "
        "the speed-up on two free cores, DDP overhead included, others' load excluded",
        "one_worker_two_threads_vs_one_thread": round(threaded["samples_per_s"] / one["samples_per_s"], 3),
        "target_two_vs_one": 1.6,
        "loader_headroom": round(loader / per_worker_need, 1),
        "loader_is_bottleneck": loader < per_worker_need * 1.5,
        "gpu_on_paper": {
            "full_preset_gflop_per_triplet_256px": 265,
            "h100_bf16_dense_peak_tflops": 989,
            "at_35_percent_of_peak_triplets_per_s": round(0.35 * 989e3 / 265),
            "loader_cores_needed_per_h100_at_100_triplets_per_s_per_core": 10,
            "n_gpu_scaling": "DDP all-reduce of 15.2 M fp32 grads (61 MB) per step: ~1-2 ms on NVLink, "
            "overlapped with the backward, vs ~50 ms of compute at batch 64/GPU: "
            "~0.95x linear per added GPU on one node",
        },
    }
    write_results(RESULTS, result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
