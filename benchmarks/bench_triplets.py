"""Triplet generation and reading: what it costs to make and to stream dual-LUT triplets.

    python -m benchmarks.bench_triplets [--crop 256] [--cpus 1,2] [--per-image 40] [--workers 0,2]
                                        [--encodings raw,webp]

Measures, on the bundled photos (ingested into a temporary local data root):
- the image encodings for shards: encode/decode CPU ms per image, KiB, exactness, on images made
  by ``make_triplet``;
- triplet generation with Ray Data on 1 and 2 CPUs (``run_shard_builders``, the flow's own code),
  for the default encoding and WebP: triplets/s by wall clock (actor start-up included), in the
  steady state (from each actor's first finished shard to the last shard; the 1 -> 2 CPU ratio
  uses this), per busy core and per CPU second of the actors (robust to other load);
- bytes per triplet in the shards;
- the reader (``TripletDataset`` through a ``DataLoader``) with 0 and 2 loader workers:
  samples/s and samples/s per loader core (and per CPU second in-process).

The machine's load average is recorded: on a shared machine wall-clock figures move with it.
Writes benchmarks/results/triplets.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import write_results

RESULTS = Path(__file__).parent / "results" / "triplets.json"
TARGETS = {"triplets_per_s_per_core_256": 50.0, "scaling_1_to_2": 1.8, "reader_per_loader_core": 100.0}


def encoding_table(crop: int, count: int = 12) -> list[dict]:
    """Encode/decode CPU time and size of each encoding on real triplet images (one thread)."""
    from ssh_model.images import read_image
    from ssh_model.lut import lut_bank
    from ssh_model.samples import sample_photo_paths
    from ssh_model.shards import ENCODINGS, IMAGE_COLUMNS, LOSSLESS_ENCODINGS, decode_pixels, encode_pixels
    from ssh_model.triplets import make_triplet

    rng = np.random.default_rng(0)
    bank = lut_bank(0, count=8)
    photos = [read_image(path) for path in sample_photo_paths()]
    images = []
    for i in range(count):
        a, b = rng.choice(len(bank), 2, replace=False)
        triplet = make_triplet(photos[i % len(photos)], bank[a], bank[b], rng, crop_size=crop)
        images += [getattr(triplet, key) for key in IMAGE_COLUMNS]
    table = []
    for encoding in ENCODINGS:
        start = time.process_time()
        blobs = [encode_pixels(image, encoding) for image in images]
        encode_ms = (time.process_time() - start) / len(images) * 1e3
        start = time.process_time()
        decoded = [decode_pixels(blob, encoding, crop) for blob in blobs]
        decode_ms = (time.process_time() - start) / len(images) * 1e3
        error = max(int(np.abs(d.astype(int) - i).max()) for d, i in zip(decoded, images, strict=True))
        if encoding == "raw":  # stored with Parquet's zstd: count what lands on disk
            import pyarrow as pa

            start = time.process_time()
            packed = [pa.compress(blob, "zstd", asbytes=True) for blob in blobs]
            encode_ms += (time.process_time() - start) / len(images) * 1e3
            start = time.process_time()
            for blob, data in zip(blobs, packed, strict=True):
                pa.decompress(data, len(blob), "zstd", asbytes=True)
            decode_ms += (time.process_time() - start) / len(images) * 1e3
            blobs = packed
        table.append(
            {
                "encoding": encoding + (" + parquet zstd" if encoding == "raw" else ""),
                "encode_ms": round(encode_ms, 3),
                "decode_ms": round(decode_ms, 3),
                "kib_per_image": round(float(np.mean([len(b) for b in blobs])) / 1024, 1),
                "kib_per_triplet": round(4 * float(np.mean([len(b) for b in blobs])) / 1024, 1),
                "max_abs_error": error,
                "lossless": encoding in LOSSLESS_ENCODINGS and error == 0,
            }
        )
    return table


def ingest_samples(root: str) -> None:
    from pipeline.ingest import expand_sources, ingest_photos

    urls, empty = expand_sources(["builtin://samples"])
    ingest_photos(urls, root, empty, max_workers=4)


def build_params(root: str, version: str, crop: int, per_image: int, encoding: str):
    """The flow's own plan of a fresh version over the ingested samples: one photo per shard (``triplets_per_shard
    = per_image``), so every CPU gets shards."""
    from pipeline.configs import TripletConfig
    from pipeline.triplets import plan_build

    config = TripletConfig(
        luts="generator:0:32",
        per_image=per_image,
        crop_size=crop,
        seed=0,
        encoding=encoding,
        rows_per_group=64,
        triplets_per_shard=per_image,
        overwrite=True,
    )
    params, prepared = plan_build(root, version, config)
    return params, prepared.todo


def summarize_build(entries: list[dict], cpus: int, encoding: str, wall: float) -> dict:
    rows = sum(e["rows"] for e in entries)
    busy = sum(e["seconds"] for e in entries)
    cpu = sum(e["cpu_seconds"] for e in entries)
    # Steady state: after each actor's first shard (which carries its start-up), until the last shard.
    actors = min(cpus, len(entries))
    first = entries[actors - 1]["finished_s"]
    later = sum(e["rows"] for e in entries[actors:])
    steady = later / (entries[-1]["finished_s"] - first) if later else float("nan")
    return {
        "cpus": cpus,
        "encoding": encoding,
        "triplets": rows,
        "shards": len(entries),
        "wall_s": round(wall, 3),
        "triplets_per_s": round(rows / wall, 2),
        "triplets_per_s_steady": round(steady, 2),
        "triplets_per_s_per_busy_core": round(rows / busy, 2),
        "triplets_per_cpu_second": round(rows / cpu, 2),
        "bytes_per_triplet": round(sum(e["bytes"] for e in entries) / rows),
    }


def generation(root: str, cpus: int, crop: int, per_image: int, encodings: list[str]) -> list[dict]:
    """Build one version per encoding with Ray on ``cpus`` CPUs (after a warm-up build)."""
    import ray

    from pipeline.triplet_versions import version_root_of
    from pipeline.triplets import run_shard_builders

    ray.init(num_cpus=cpus, address="local", include_dashboard=False, logging_level=logging.WARNING)
    rows = []
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        warm, plans = build_params(root, f"warm-{cpus}", crop, 2, encodings[0])
        run_shard_builders(plans, warm, root, version_root_of(root, f"warm-{cpus}"))
        for encoding in encodings:
            params, plans = build_params(root, f"{encoding}-{cpus}", crop, per_image, encoding)
            start = time.perf_counter()
            entries = run_shard_builders(plans, params, root, version_root_of(root, f"{encoding}-{cpus}"))
            rows.append(summarize_build(entries, cpus, encoding, time.perf_counter() - start))
    finally:
        ray.shutdown()
    return rows


def reader(root: str, workers: int, batch_size: int, epochs: int = 3) -> dict:
    """Samples/s of TripletDataset through a DataLoader (decoding included), after a first batch."""
    import torch
    from torch.utils.data import DataLoader

    from ssh_model.dataset import TripletDataset

    dataset = TripletDataset(root, split=None, batch_size=batch_size, seed=0, rank=0, world_size=1)
    samples, seconds, cpu = 0, 0.0, 0.0
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=None, num_workers=workers)
        iterator = iter(loader)
        next(iterator)  # workers started and the first row groups read
        start, cpu_start = time.perf_counter(), time.process_time()
        for batch in iterator:
            samples += int(batch["content_a"].shape[0])
            assert batch["content_b"].dtype == torch.uint8
        seconds += time.perf_counter() - start
        cpu += time.process_time() - cpu_start
    rate = samples / seconds
    return {
        "workers": workers,
        "batch_size": batch_size,
        "samples": samples,
        "seconds": round(seconds, 3),
        "samples_per_s": round(rate, 1),
        "samples_per_s_per_loader_core": round(rate / max(1, workers), 1),
        # in-process loading only: CPU time of this process (robust to other load on the machine)
        "samples_per_cpu_second": round(samples / cpu, 1) if workers == 0 else None,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_triplets", description=__doc__.split("\n")[0])
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--cpus", default="1,2", help="Ray CPU counts to compare")
    parser.add_argument("--per-image", type=int, default=40, help="triplets per photo in the timed builds")
    parser.add_argument("--workers", default="0,2", help="DataLoader worker counts for the reader")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--encodings", default=None, help="shard encodings to build and read (default: the library's default, then webp)"
    )
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)

    import torch

    from ssh_model.shards import DEFAULT_ENCODING

    torch.set_num_threads(1)
    encodings = args.encodings.split(",") if args.encodings else list(dict.fromkeys([DEFAULT_ENCODING, "webp"]))
    cpu_counts = [int(c) for c in args.cpus.split(",")]
    result: dict = {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "processor": platform.processor(),
            "load_average_at_start": os.getloadavg(),
        },
        "crop": args.crop,
        "default_encoding": DEFAULT_ENCODING,
        "targets": TARGETS,
    }
    print(f"encodings at {args.crop} px ...", flush=True)
    result["encodings"] = encoding_table(args.crop)
    for row in result["encodings"]:
        print(
            f"  {row['encoding']:20s} encode {row['encode_ms']:6.2f} ms  decode {row['decode_ms']:6.2f} ms"
            f"  {row['kib_per_image']:6.1f} KiB/image  max error {row['max_abs_error']}"
        )
    with tempfile.TemporaryDirectory(prefix="bench-triplets-") as root:
        ingest_samples(root)
        result["generation"], result["reader"] = [], []
        for cpus in cpu_counts:
            print(f"generation on {cpus} CPU(s) ...", flush=True)
            for row in generation(root, cpus, args.crop, args.per_image, encodings):
                print(
                    f"  {row['encoding']:5s} {row['triplets']} triplets in {row['wall_s']} s: "
                    f"{row['triplets_per_s']} triplets/s (steady {row['triplets_per_s_steady']}), "
                    f"{row['triplets_per_cpu_second']} per CPU second, "
                    f"{row['bytes_per_triplet']} B/triplet"
                )
                result["generation"].append(row)
        for encoding in encodings:
            version = f"{root}/triplets/{encoding}-{cpu_counts[-1]}"
            for workers in [int(w) for w in args.workers.split(",")]:
                row = {"encoding": encoding, **reader(version, workers, args.batch_size)}
                print(
                    f"reader {encoding:5s} {workers} loader worker(s): {row['samples_per_s']} samples/s, "
                    f"{row['samples_per_s_per_loader_core']} per loader core",
                    flush=True,
                )
                result["reader"].append(row)
    for encoding in encodings:
        builds = {r["cpus"]: r for r in result["generation"] if r["encoding"] == encoding}
        if 1 in builds and 2 in builds:
            result.setdefault("scaling_1_to_2", {})[encoding] = round(
                builds[2]["triplets_per_s_steady"] / builds[1]["triplets_per_s_steady"], 3
            )
    default_builds = [r for r in result["generation"] if r["encoding"] == DEFAULT_ENCODING]
    default_reads = [r for r in result["reader"] if r["encoding"] == DEFAULT_ENCODING]
    if default_builds:
        result["bytes_per_triplet"] = default_builds[-1]["bytes_per_triplet"]
        per_core = min(r["triplets_per_s_steady"] / r["cpus"] for r in default_builds)
        result["meets"] = {
            "triplets_per_s_per_core_256": per_core >= TARGETS["triplets_per_s_per_core_256"] if args.crop == 256 else None,
            "scaling_1_to_2": result.get("scaling_1_to_2", {}).get(DEFAULT_ENCODING, 0) >= TARGETS["scaling_1_to_2"],
            "reader_per_loader_core": min(r["samples_per_s_per_loader_core"] for r in default_reads)
            >= TARGETS["reader_per_loader_core"],
        }
        # The same per-core targets on CPU time (what a core does when it is not shared with other work).
        in_process = [r["samples_per_cpu_second"] for r in default_reads if r["samples_per_cpu_second"]]
        result["meets_on_cpu_time"] = {
            "triplets_per_cpu_second": min(r["triplets_per_cpu_second"] for r in default_builds)
            >= TARGETS["triplets_per_s_per_core_256"],
            "reader_samples_per_cpu_second": bool(in_process) and min(in_process) >= TARGETS["reader_per_loader_core"],
        }
    result["machine"]["load_average_at_end"] = os.getloadavg()
    keys = ("scaling_1_to_2", "bytes_per_triplet", "meets", "meets_on_cpu_time")
    headline = {k: result.get(k) for k in keys}
    print(json.dumps(headline), flush=True)
    write_results(args.output, result)
    return result


if __name__ == "__main__":
    main()
