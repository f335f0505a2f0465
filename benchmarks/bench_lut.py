"""Applying a 3D LUT to a 4K photo: Pillow, our threaded ``apply_lut``, torch, and the float64 reference.

    python -m benchmarks.bench_lut [--repeats 7] [--size 33] [--width 3840 --height 2160]

On a smooth natural photo (scikit-image's astronaut, resized to 3840 x 2160) and a generated
33^3 grade, the median of ``--repeats`` timed runs (after one warm-up) of:
- ``pillow_plain``: ONE plain Pillow call as a user would write it, numpy in and numpy out:
  ``np.asarray(Image.fromarray(img).filter(ImageFilter.Color3DLUT(N, table)))``;
- ``pillow_filter_only``: just ``pil_image.filter(prebuilt Color3DLUT)`` on an image already in
  Pillow (no conversions: the floor of one single-threaded call);
- ``apply_lut``: ours (strips filtered in a thread pool, cached filter), numpy in and out;
- ``apply_lut_torch``: ``grid_sample`` trilinear on a float (1, 3, H, W) tensor, 2 torch threads;
- ``reference``: the float64 numpy trilinear (``apply_lut_reference``) on a 1/16 size image,
  reported as Mpx/s.
Also the agreement (max abs difference in 8-bit levels) of each path with the reference.

Target: apply_lut at least 1.8x the speed of one plain Pillow call. Writes benchmarks/results/lut.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks import write_results

RESULTS = Path(__file__).parent / "results" / "lut.json"
TARGET_SPEEDUP = 1.8


def timed(run: Callable[[], object], repeats: int) -> dict:
    """Median and spread of ``repeats`` runs after one warm-up, in ms."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": round(statistics.median(times), 2), "min_ms": round(min(times), 2), "max_ms": round(max(times), 2)}


def with_rate(result: dict, pixels: int) -> dict:
    result["mpx_per_s"] = round(pixels / 1e6 / (result["median_ms"] / 1e3), 1)
    return result


def photo(width: int, height: int) -> np.ndarray:
    from PIL import Image
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((width, height), Image.Resampling.BICUBIC))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--size", type=int, default=33, help="LUT grid size")
    parser.add_argument("--width", type=int, default=3840)
    parser.add_argument("--height", type=int, default=2160)
    parser.add_argument("--seed", type=int, default=3, help="seed of the generated grade")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)

    import PIL
    import torch
    from PIL import Image, ImageFilter

    from ssh_model.lut import apply_lut, apply_lut_reference, apply_lut_torch, luts_to_tensor, random_lut

    torch.set_num_threads(2)  # this script only
    image = photo(args.width, args.height)  # (H, W, 3) uint8
    pixels = args.width * args.height
    lut = random_lut(args.seed, size=args.size)
    flat_table = lut.table.reshape(-1)
    cases: dict[str, dict] = {}

    def pillow_plain() -> np.ndarray:
        return np.asarray(Image.fromarray(image).filter(ImageFilter.Color3DLUT(args.size, flat_table)))

    cases["pillow_plain"] = with_rate(timed(pillow_plain, args.repeats), pixels)
    print("pillow plain", cases["pillow_plain"], flush=True)
    pil_image, prebuilt = Image.fromarray(image), ImageFilter.Color3DLUT(args.size, flat_table)
    cases["pillow_filter_only"] = with_rate(timed(lambda: pil_image.filter(prebuilt), args.repeats), pixels)
    print("pillow filter only", cases["pillow_filter_only"], flush=True)
    cases["apply_lut"] = with_rate(timed(lambda: apply_lut(image, lut), args.repeats), pixels)
    print("apply_lut", cases["apply_lut"], flush=True)

    tensor = torch.from_numpy(image.copy()).permute(2, 0, 1).unsqueeze(0).float().div(255.0)  # (1, 3, H, W)
    tables = luts_to_tensor([lut])  # (1, N, N, N, 3)
    with torch.no_grad():
        cases["apply_lut_torch"] = with_rate(
            timed(lambda: apply_lut_torch(tensor, tables), max(3, args.repeats // 2)), pixels
        )
        graded_torch = apply_lut_torch(tensor, tables)[0].permute(1, 2, 0).numpy().astype(np.float64)
    cases["apply_lut_torch"]["threads"] = torch.get_num_threads()
    print("apply_lut_torch", cases["apply_lut_torch"], flush=True)

    small = image[::4, ::4].copy()  # 1/16 of the pixels
    small_pixels = int(small.shape[0] * small.shape[1])
    cases["reference"] = with_rate(timed(lambda: apply_lut_reference(small, lut), 3), small_pixels)
    cases["reference"]["pixels"] = small_pixels
    print("reference float64", cases["reference"], flush=True)

    reference = np.rint(apply_lut_reference(small, lut))
    agreement = {
        "apply_lut_vs_reference": int(np.abs(apply_lut(small, lut) - reference).max()),
        "pillow_plain_vs_reference": int(np.abs(pillow_plain()[::4, ::4] - reference).max()),
        "torch_vs_reference": int(np.abs(np.rint(graded_torch[::4, ::4] * 255.0) - reference).max()),
        "apply_lut_equals_pillow_plain": bool(np.array_equal(apply_lut(image, lut), pillow_plain())),
    }
    speedup = cases["pillow_plain"]["median_ms"] / cases["apply_lut"]["median_ms"]
    speedup_bare = cases["pillow_filter_only"]["median_ms"] / cases["apply_lut"]["median_ms"]
    report = {
        "image": {"width": args.width, "height": args.height, "source": "skimage.data.astronaut (bicubic)"},
        "lut": {"size": args.size, "name": lut.name, "title": lut.title},
        "repeats": args.repeats,
        "cases": cases,
        "speedup_apply_lut_vs_pillow_plain": round(speedup, 2),
        "speedup_apply_lut_vs_pillow_filter_only": round(speedup_bare, 2),
        "target_speedup": TARGET_SPEEDUP,
        "meets_target": speedup >= TARGET_SPEEDUP,
        "max_abs_diff_levels": agreement,
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "pillow": PIL.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
    }
    print(
        json.dumps(
            {
                k: report[k]
                for k in (
                    "speedup_apply_lut_vs_pillow_plain",
                    "speedup_apply_lut_vs_pillow_filter_only",
                    "meets_target",
                    "max_abs_diff_levels",
                )
            },
            indent=1,
        ),
        flush=True,
    )
    write_results(args.output, report)
    return report


if __name__ == "__main__":
    main()
