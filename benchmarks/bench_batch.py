"""Bulk harmonization throughput from the local S3 server: the bare sequential loop vs the Ray Data job.

    python -m benchmarks.bench_batch [--count-1mp 24] [--count-12mp 12] [--preset full]

For 1 MP and 12 MP JPEG composites (PNG masks) on a real local S3 endpoint, measures images/s of
  - the bare sequential loop in this process (fetch, decode, harmonize, encode, write; 1 torch thread),
  - the job (``run_catalog``: fetch stage + actor pool + results) with 1 and with 2 actors (1 CPU each),
all in one run, and the peak resident memory (VmHWM) of each model actor. Wall-clock times include
the job's whole overhead (planning, actor start and model load, hashing, records, merge); "steady"
rates count only the records that arrive after the first block, i.e. without the one-off start-up
(``first_records_after_s``), which is what a long catalog sees.
Targets: 2 actors >= 1.8x one actor; the 1-actor job at most 20% slower than the sequential loop.
Writes benchmarks/results/batch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from unittest.mock import patch  # of os.environ only

import numpy as np

from benchmarks import write_results

RESULTS = Path(__file__).parent / "results" / "batch.json"
SIZES = {"1mp": (864, 1152), "12mp": (3000, 4000)}  # (H, W)


@contextmanager
def local_s3():
    """A real local S3 endpoint (SeaweedFS, infra.s3_server) with this process's environment pointing at it.

    Set before Ray starts, so Ray's workers inherit it. Nothing about it is printed (keys included).
    """
    from infra.s3_server import S3Server

    server = S3Server().start()
    try:
        with patch.dict(os.environ, server.env):
            yield server.create_bucket("bench-batch")
    finally:
        server.stop(grace_s=3.0)


class ActorMemory:
    """Samples VmHWM (peak RSS) of every process whose command line names the Harmonizer actor."""

    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self.peaks: dict[int, int] = {}
        self.ignored: set[int] = set()  # actors of an earlier run still shutting down
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            if int(pid) in self.ignored:
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    if b"Harmonizer" not in handle.read():
                        continue
                with open(f"/proc/{pid}/status") as handle:
                    for line in handle:
                        if line.startswith("VmHWM:"):
                            peak = int(line.split()[1]) * 1024
                            self.peaks[int(pid)] = max(self.peaks.get(int(pid), 0), peak)
            except OSError:
                continue

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> ActorMemory:
        self._sample()
        self.ignored, self.peaks = set(self.peaks), {}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def smooth_photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    from PIL import Image

    small = rng.integers(0, 256, size=(max(2, height // 24), max(2, width // 24), 3), dtype=np.uint8)
    photo = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    photo = np.asarray(photo, dtype=np.int16)
    noise = rng.integers(-6, 7, size=(height, width, 1), dtype=np.int16)  # some texture for the codecs
    return np.clip(photo + noise, 0, 255).astype(np.uint8)


def write_inputs(prefix: str, size: tuple[int, int], count: int, seed: int) -> list[dict[str, str]]:
    """``count`` JPEG composites (a colour-shifted ellipse) and PNG masks under ``prefix``; catalog rows."""
    from ssh_model.images import encode_image
    from ssh_model.storage import join, write_bytes_atomic

    rng = np.random.default_rng(seed)
    height, width = size
    yy, xx = np.ogrid[0:height, 0:width]
    inside = ((yy - height / 2) / (height / 3)) ** 2 + ((xx - width / 2) / (width / 4)) ** 2 <= 1.0
    mask = np.repeat((inside * 255).astype(np.uint8)[..., None], 3, axis=2)
    mask_bytes = encode_image(mask, "PNG")
    rows = []
    for i in range(count):
        photo = smooth_photo(rng, height, width)
        shifted = np.clip(photo.astype(np.int16) + rng.integers(-50, 50, size=3), 0, 255).astype(np.uint8)
        composite = np.where(inside[..., None], shifted, photo)
        row = {
            "id": f"img-{i:03d}",
            "composite": join(prefix, f"img-{i:03d}.jpg"),
            "mask": join(prefix, f"img-{i:03d}-mask.png"),
        }
        write_bytes_atomic(row["composite"], encode_image(composite, "JPEG", quality=90))
        write_bytes_atomic(row["mask"], mask_bytes)
        rows.append(row)
    return rows


def sequential(rows: list[dict[str, str]], model_uri: str, out_prefix: str, jpeg_quality: int) -> dict:
    """The bare loop: what one actor does per row, with nothing around it, on one torch thread."""
    import torch

    from pipeline.batch_actor import load_model_payload, model_from_payload
    from ssh_model.images import decode_image, decode_mask, encode_image
    from ssh_model.inference import harmonize
    from ssh_model.storage import join, read_bytes, write_bytes_atomic

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        started = time.perf_counter()
        model = model_from_payload(load_model_payload(model_uri))
        for row in rows:
            composite = decode_image(read_bytes(row["composite"]), row["composite"])
            mask = decode_mask(read_bytes(row["mask"]), row["mask"])
            result = harmonize(composite, mask, model)
            data = encode_image(result, "JPEG", jpeg_quality)
            write_bytes_atomic(join(out_prefix, row["id"] + ".jpg"), data)
        seconds = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    return {"seconds": round(seconds, 3), "images_per_s": round(len(rows) / seconds, 4)}


def job(catalog_url: str, out_prefix: str, model_uri: str, actors: int, jpeg_quality: int) -> dict:
    from pipeline.batch_inference import run_catalog
    from pipeline.catalog import read_catalog
    from pipeline.configs import BatchConfig

    catalog = read_catalog(catalog_url, output_prefix=out_prefix)
    options = BatchConfig(
        model_uri=model_uri, concurrency=actors, num_cpus=1.0, jpeg_quality=jpeg_quality, progress_every_s=1e9
    )
    arrivals: list[tuple[float, int]] = []  # (seconds since start, rows) per block of records
    with ActorMemory() as memory:
        started = time.perf_counter()

        def arrived(rows: list[dict]) -> None:
            arrivals.append((time.perf_counter() - started, len(rows)))

        outcome = run_catalog(catalog, options, on_records=arrived)
        seconds = time.perf_counter() - started
    summary = outcome.summary
    if summary.ok != len(catalog):
        raise RuntimeError(f"job failed rows: {summary.reasons}")
    first_at, first_rows = arrivals[0]
    last_at = arrivals[-1][0]
    steady = (len(catalog) - first_rows) / (last_at - first_at) if last_at > first_at else None
    return {
        "seconds": round(seconds, 3),
        "images_per_s": round(len(catalog) / seconds, 4),
        "first_records_after_s": round(first_at, 3),
        "steady_images_per_s": round(steady, 4) if steady else None,  # after the first block of records
        "median_row_seconds": round(float(np.median([r["seconds"] for r in outcome.records])), 3),
        "actors_seen": len(memory.peaks),
        "peak_rss_mb_per_actor": sorted(round(v / 2**20, 1) for v in memory.peaks.values()),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count-1mp", type=int, default=24)
    parser.add_argument("--count-12mp", type=int, default=12)
    parser.add_argument("--preset", default="full", help="network preset (random weights; speed only)")
    parser.add_argument("--jpeg-quality", type=int, default=90)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)

    import ray
    import torch

    from pipeline.catalog import write_catalog
    from pipeline.ray_runtime import ray_init
    from ssh_model.checkpoints import save_model
    from ssh_model.network import PRESETS

    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "gpu": torch.cuda.is_available(),
    }
    report: dict = {"machine": machine, "preset": args.preset, "jpeg_quality": args.jpeg_quality, "cases": {}}
    with local_s3() as bucket:
        root = f"s3://{bucket}/bench-batch-{uuid.uuid4().hex[:8]}"
        ray_init()
        report["machine"]["ray_cpus"] = ray.cluster_resources().get("CPU")
        torch.manual_seed(0)
        model_uri = f"{root}/model-{args.preset}.safetensors"
        save_model(PRESETS[args.preset]().eval(), model_uri)
        for name, count in (("1mp", args.count_1mp), ("12mp", args.count_12mp)):
            if count <= 0:
                continue
            rows = write_inputs(f"{root}/{name}/in", SIZES[name], count, seed=len(name))
            catalog_url = f"{root}/{name}/catalog.parquet"
            write_catalog(rows, catalog_url)
            case = {"size": list(SIZES[name]), "count": count}
            case["sequential"] = {
                "load_avg_1m_before": os.getloadavg()[0],
                **sequential(rows, model_uri, f"{root}/{name}/seq", args.jpeg_quality),
            }
            print(name, "sequential", case["sequential"], flush=True)
            for actors in (1, 2):
                case[f"job_{actors}_actor"] = {
                    "load_avg_1m_before": os.getloadavg()[0],
                    **job(catalog_url, f"{root}/{name}/job{actors}", model_uri, actors, args.jpeg_quality),
                }
                print(name, f"job {actors} actor(s)", case[f"job_{actors}_actor"], flush=True)
            one, two, seq = (case[k]["images_per_s"] for k in ("job_1_actor", "job_2_actor", "sequential"))
            one_steady = case["job_1_actor"]["steady_images_per_s"] or one
            two_steady = case["job_2_actor"]["steady_images_per_s"] or two
            case["speedup_2_vs_1_actor"] = round(two / one, 3)
            case["overhead_1_actor_vs_sequential"] = round(seq / one - 1.0, 3)
            case["steady_speedup_2_vs_1_actor"] = round(two_steady / one_steady, 3)
            case["steady_overhead_1_actor_vs_sequential"] = round(seq / one_steady - 1.0, 3)
            case["targets_met"] = {
                "wall: 2 actors >= 1.8x": two / one >= 1.8,
                "wall: overhead <= 20%": seq / one - 1 <= 0.2,
                "steady: 2 actors >= 1.8x": two_steady / one_steady >= 1.8,
                "steady: overhead <= 20%": seq / one_steady - 1 <= 0.2,
            }
            report["cases"][name] = case
        ray.shutdown()
    write_results(args.output, report)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
