"""Full-resolution harmonization on CPU: latency and peak extra memory at 1 MP and 4K (3840 x 2160).

    python -m benchmarks.bench_harmonize [--threads 2] [--repeats 5]

Cases: {1 MP, 4K} x {the shipped model (``pretrained``), SSHNet() (full preset), ssh_small(), ColourNet
small and grid-small}, random weights but for the shipped model (the cost does not depend on them;
ColourNet applies its predicted transform to every foreground pixel instead of a fitted LUT). Each
case runs in its own subprocess so that its peak memory is its own: after a warm-up on a small
image, the process's peak RSS is reset (``/proc/self/clear_refs``), one harmonize call runs, and
peak extra = VmHWM - VmRSS before the call. Latency is the median of ``--repeats`` further calls.
The 4K subprocesses of the shipped model and of SSHNet() also time one plain Pillow ``Color3DLUT``
(33^3) call on the same image, alternating with the harmonize calls so that both see the same
machine load: the target is 4K harmonize within 3x of it (ratio of medians), and under 1 GB extra
memory. On a shared machine, also read the ratio of the minima and the recorded load average.

Writes benchmarks/results/harmonize.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import write_results

RESULTS = Path(__file__).parent / "results" / "harmonize.json"
SIZES = {"1mp": (1000, 1000), "4k": (2160, 3840)}  # (H, W)
PRESETS = ("pretrained", "full", "small", "colour-small", "colour-grid-small")  # shipped, SSHNet, ColourNet
TIMED_AGAINST_PILLOW = ("pretrained", "full")  # at 4K, alternating with a plain Pillow LUT pass
TARGET_RATIO = 3.0
TARGET_EXTRA_MB = 1024.0


def proc_status_kb(field: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of /proc/self/status, in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := VmRSS


def test_image(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth photo-like composite with a colour-shifted soft ellipse (about 20 % of the area)."""
    rng = np.random.default_rng(seed)
    from PIL import Image

    small = rng.integers(0, 256, (9, 16, 3), dtype=np.uint8)
    photo = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC), np.int16)
    photo = photo + rng.integers(-6, 7, (height, width, 1), dtype=np.int16)
    yy, xx = np.ogrid[0:height, 0:width]
    dy, dx = (yy - height * 0.5) / (height * 0.35), (xx - width * 0.5) / (width * 0.18)
    radius = np.sqrt(dy**2 + dx**2)
    mask = np.clip((1.0 - radius) * 40 + 0.5, 0, 1).astype(np.float32)
    shifted = np.clip(photo + np.array([30, -10, -25]), 0, 255)
    alpha = mask[..., None]
    composite = np.clip(np.rint(alpha * shifted + (1 - alpha) * photo), 0, 255).astype(np.uint8)
    return composite, mask


def pillow_lut_call(composite: np.ndarray):
    """A zero-argument callable doing one plain ``Image.filter(Color3DLUT(33))`` on a ready Pillow image."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(1)
    axis = np.linspace(0, 1, 33)
    b, g, r = np.meshgrid(axis, axis, axis, indexing="ij")
    table = np.stack([r, g, b], axis=-1) ** 0.9 + rng.normal(0, 0.01, (33, 33, 33, 3))
    lut = ImageFilter.Color3DLUT(33, np.clip(table, 0, 1).reshape(-1, 3).tolist())
    picture = Image.fromarray(composite)
    picture.filter(lut)  # warm-up
    return lambda: picture.filter(lut)


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def run_case(size: str, preset: str, repeats: int, threads: int) -> dict:
    """One case, in this process (called in a fresh subprocess by ``main``)."""
    import torch

    from ssh_model.inference import harmonize
    from ssh_model.network import build_model, count_parameters
    from ssh_model.pretrained import PRETRAINED_URI, load_pretrained

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = load_pretrained() if preset == PRETRAINED_URI else build_model(preset).eval()
    height, width = SIZES[size]
    composite, mask = test_image(height, width)
    warm_composite, warm_mask = test_image(240, 320, seed=1)
    harmonize(warm_composite, warm_mask, model)  # torch kernels, Pillow, lazy imports
    reset_peak_rss()
    rss_before = proc_status_kb("VmRSS")
    start = time.perf_counter()
    harmonize(composite, mask, model)
    first_s = time.perf_counter() - start
    extra_mb = (proc_status_kb("VmHWM") - rss_before) / 1024.0
    # With the Pillow reference (4K), the two calls alternate so both see the same load.
    pillow = pillow_lut_call(composite) if size == "4k" and preset in TIMED_AGAINST_PILLOW else None
    times, pillow_times = [], []
    for _ in range(repeats):
        times.append(timed(lambda: harmonize(composite, mask, model)))
        if pillow is not None:
            pillow_times.append(timed(pillow))
    result = {
        "size": size,
        "height": height,
        "width": width,
        "megapixels": round(height * width / 1e6, 2),
        "preset": preset,
        "params": count_parameters(model),
        "threads": threads,
        "repeats": repeats,
        "median_s": round(float(np.median(times)), 4),
        "min_s": round(float(np.min(times)), 4),
        "first_call_s": round(first_s, 4),
        "peak_extra_mb": round(extra_mb, 1),
        "foreground_fraction": round(float((mask > 0).mean()), 3),
    }
    if pillow_times:
        result["pillow_lut_s"] = round(float(np.median(pillow_times)), 4)
        result["pillow_lut_min_s"] = round(float(np.min(pillow_times)), 4)
    result["load_average"] = Path("/proc/loadavg").read_text().split()[0]
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated model presets")
    parser.add_argument("--results", default=str(RESULTS), help="where the JSON goes")
    parser.add_argument("--case", help="internal: run one SIZE:PRESET case and print its JSON")
    args = parser.parse_args(argv)
    if args.case:
        size, preset = args.case.split(":")
        print(json.dumps(run_case(size, preset, args.repeats, args.threads)))
        return {}
    cases = []
    for size in SIZES:
        for preset in args.presets.split(","):
            command = [
                sys.executable,
                "-m",
                "benchmarks.bench_harmonize",
                "--case",
                f"{size}:{preset}",
                "--threads",
                str(args.threads),
                "--repeats",
                str(args.repeats),
            ]
            done = subprocess.run(
                command, capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent.parent
            )
            case = json.loads(done.stdout.strip().splitlines()[-1])
            print(json.dumps(case))
            cases.append(case)
    summary = {"benchmark": "harmonize", "machine": platform.platform(), "python": platform.python_version(), "cases": cases}
    summary.update({"target_ratio": TARGET_RATIO, "target_extra_mb": TARGET_EXTRA_MB})
    for preset in TIMED_AGAINST_PILLOW:  # the targets: 4K with SSHNet() and with the shipped model
        case = next((c for c in cases if c["size"] == "4k" and c["preset"] == preset), None)
        if case is None:
            continue
        ratio = case["median_s"] / case["pillow_lut_s"]
        summary.update(
            {
                f"pillow_color3dlut_4k_s_{preset}_run": case["pillow_lut_s"],
                f"ratio_4k_{preset}_to_pillow_lut": round(ratio, 2),
                f"ratio_4k_{preset}_to_pillow_lut_min": round(case["min_s"] / case["pillow_lut_min_s"], 2),
                f"meets_ratio_{preset}": ratio <= TARGET_RATIO,
                f"peak_extra_mb_4k_{preset}": case["peak_extra_mb"],
                f"meets_memory_{preset}": case["peak_extra_mb"] < TARGET_EXTRA_MB,
            }
        )
    write_results(Path(args.results), summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "cases"}, indent=2))
    return summary


if __name__ == "__main__":
    main()
