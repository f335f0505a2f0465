"""Run the benchmarks one after another, each in its own process; JSON lands in benchmarks/results/.

    python -m benchmarks                 # all of them (./dev bench)
    python -m benchmarks lut harmonize   # some of them

Benchmarks measure speed and memory on the machine at hand; they are not part of the test suite.
Run them on an otherwise idle machine: the targets compare paths measured side by side in one run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import write_results

BENCHMARKS = ("quality", "lut", "harmonize", "triplets", "train", "training_dist", "batch", "memory")
RESULTS = Path(__file__).parent / "results"


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        print(f"unknown benchmarks {unknown}; choose from {list(BENCHMARKS)}", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    runs = {}
    for name in names:
        started = time.perf_counter()
        print(f"== benchmarks.bench_{name}", flush=True)
        code = subprocess.call([sys.executable, "-m", f"benchmarks.bench_{name}"])
        runs[name] = {"exit_code": code, "seconds": round(time.perf_counter() - started, 1)}
    write_results(RESULTS / "runs.json", runs)
    failed = [name for name, run in runs.items() if run["exit_code"] != 0]
    print(json.dumps(runs, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
