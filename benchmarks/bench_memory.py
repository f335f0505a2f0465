"""Peak memory of harmonizing one large image, and of the batch job on a catalog of 79 MP images.

    python -m benchmarks.bench_memory [--rows 3]

1. Per image, each in a fresh process with the shipped model loaded and warmed up: read a PNG
   composite and its mask, harmonize at full resolution, encode the result as PNG (what the CLI and
   a batch actor do), at 4K (3840 x 2160) and at 79 MP (8900 x 8900, just under the default 80 MP
   limit). The process's peak resident memory (VmHWM, reset after the warm-up) gives bytes per pixel;
   ``pipeline.batch_inference.actor_memory`` (what an actor reserves) must cover the whole peak.
2. The batch job (``run_catalog``) with default options on ``--rows`` 79 MP composites on local
   Ray: the actor plan it chose (memory reserved per actor), the peak VmHWM of each model actor, and
   the machine's lowest MemAvailable during the run. Target: completes with every row ok, and no
   actor's peak above what it reserved.
Writes benchmarks/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks import write_results
from benchmarks.bench_batch import ActorMemory

RESULTS = Path(__file__).parent / "results" / "memory.json"
SIZES = {"4k": (2160, 3840), "79mp": (8900, 8900)}  # (H, W)
MB = 2**20


def write_case(folder: str, name: str, height: int, width: int) -> dict[str, str]:
    """A smooth PNG composite with a colour-shifted ellipse and its mask (small files, large images)."""
    from ssh_model.images import encode_image

    yy, xx = np.ogrid[0:height, 0:width]
    inside = ((yy - height / 2) / (height / 3)) ** 2 + ((xx - width / 2) / (width / 4)) ** 2 <= 1.0
    composite = np.empty((height, width, 3), np.uint8)
    composite[..., 0] = (xx * 200 // width).astype(np.uint8)
    composite[..., 1] = (yy * 200 // height).astype(np.uint8)
    composite[..., 2] = 120
    composite[inside] = (210, 150, 60)
    paths = {"composite": os.path.join(folder, f"{name}.png"), "mask": os.path.join(folder, f"{name}-mask.png")}
    Path(paths["composite"]).write_bytes(encode_image(composite, "PNG"))
    Path(paths["mask"]).write_bytes(encode_image((inside * 255).astype(np.uint8), "PNG"))
    return paths


def _status(key: str) -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith(key))


def measure_one(composite: str, mask: str) -> dict:
    """In this process: the peak memory of read + harmonize + encode, above the warmed-up model's."""
    import torch

    from ssh_model.images import encode_image
    from ssh_model.inference import harmonize, harmonize_files
    from ssh_model.pretrained import load_pretrained

    torch.set_num_threads(2)
    model = load_pretrained()
    warm = np.zeros((64, 64, 3), np.uint8)
    warm_mask = np.zeros((64, 64), np.float32)
    warm_mask[16:48, 16:48] = 1
    harmonize(warm, warm_mask, model)
    base = _status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as handle:  # resets VmHWM to the current RSS
        handle.write("5")
    started = time.perf_counter()
    result = harmonize_files(composite, mask, model)
    data = encode_image(result, "PNG")
    return {
        "base_rss_mb": round(base / MB, 1),
        "peak_rss_mb": round(_status("VmHWM:") / MB, 1),
        "seconds": round(time.perf_counter() - started, 2),
        "output_bytes": len(data),
    }


def per_image(folder: str, name: str, size: tuple[int, int]) -> dict:
    height, width = size
    paths = write_case(folder, name, height, width)
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_memory", "--one", paths["composite"], paths["mask"]],
        check=True,
        capture_output=True,
        text=True,
    )
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    extra = (measured["peak_rss_mb"] - measured["base_rss_mb"]) * MB
    return {
        "size": name,
        "height": height,
        "width": width,
        "megapixels": round(height * width / 1e6, 1),
        **measured,
        "extra_mb": round(extra / MB, 1),
        "bytes_per_pixel": round(extra / (height * width), 1),
        "input_bytes": os.path.getsize(paths["composite"]),
    }


class MemAvailable:
    """The lowest MemAvailable (bytes) seen while the block runs, sampled every ``interval_s``."""

    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s, self.lowest, self.start = interval_s, None, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def read() -> int:
        with open("/proc/meminfo") as handle:
            return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("MemAvailable:"))

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self.read()
            self.lowest = value if self.lowest is None else min(self.lowest, value)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> MemAvailable:
        self.start = self.read()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def batch_job(folder: str, rows: int) -> dict:
    """The batch job with default options on ``rows`` 79 MP composites."""
    import ray

    from pipeline.batch_inference import actor_resources, run_catalog
    from pipeline.catalog import read_catalog, write_catalog
    from pipeline.configs import BatchConfig
    from ssh_model.settings import get_settings

    height, width = SIZES["79mp"]
    first = write_case(folder, "big-000", height, width)
    catalog_rows = [{"id": "big-000", **first}]
    for i in range(1, rows):  # the same pixels under other names: writing 79 MP PNGs is slow
        paths = {role: path.replace("big-000", f"big-{i:03d}") for role, path in first.items()}
        for role, path in paths.items():
            Path(path).write_bytes(Path(first[role]).read_bytes())
        catalog_rows.append({"id": f"big-{i:03d}", **paths})
    write_catalog(catalog_rows, f"{folder}/big.csv")
    catalog = read_catalog(f"{folder}/big.csv", output_prefix=f"{folder}/out")
    options = BatchConfig(model_uri="pretrained")
    started = time.perf_counter()
    with MemAvailable() as memory, ActorMemory() as actors:
        outcome = run_catalog(catalog, options)
    seconds = time.perf_counter() - started
    plan = actor_resources(options, get_settings().max_image_pixels)
    resources = ray.cluster_resources()
    peaks = sorted(actors.peaks.values())
    return {
        "rows": rows,
        "megapixels": round(height * width / 1e6, 1),
        "seconds": round(seconds, 1),
        "ok": outcome.summary.ok,
        "errors": outcome.summary.error,
        "ray_memory_gb": round(resources.get("memory", 0) / 2**30, 2),
        "actors": plan.actors,
        "reserved_per_actor_gb": round(plan.memory / 2**30, 2),
        "actor_peak_rss_gb": [round(p / 2**30, 2) for p in peaks],
        "machine_memory_used_peak_gb": round((memory.start - memory.lowest) / 2**30, 2),
        "within_reservation": bool(peaks) and max(peaks) <= plan.memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3, help="79 MP composites in the batch catalog")
    parser.add_argument("--one", nargs=2, metavar=("COMPOSITE", "MASK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(*args.one)))
        return
    with tempfile.TemporaryDirectory() as folder:
        images = [per_image(folder, name, size) for name, size in SIZES.items()]
        for row in images:
            print(json.dumps(row), flush=True)
        job = batch_job(folder, args.rows)
        print(json.dumps(job), flush=True)
    from pipeline.batch_inference import ACTOR_BASE_BYTES, PEAK_BYTES_PER_PIXEL, actor_memory

    for row in images:
        row["actor_memory_mb"] = round(actor_memory(row["height"] * row["width"]) / MB, 1)
    results = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        },
        "images": images,
        "batch": job,
        "constants": {"peak_bytes_per_pixel": PEAK_BYTES_PER_PIXEL, "actor_base_mb": ACTOR_BASE_BYTES / MB},
        "targets": {
            "actor_memory_covers_measured": all(r["peak_rss_mb"] <= r["actor_memory_mb"] for r in images),
            "batch_completes": job["ok"] == job["rows"] and job["errors"] == 0,
            "actors_within_reservation": job["within_reservation"],
        },
    }
    print(f"wrote {write_results(RESULTS, results)}")


if __name__ == "__main__":
    main()
