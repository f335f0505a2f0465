"""Speed and memory benchmarks (``python -m benchmarks``); each writes its results as JSON."""

import json
from pathlib import Path


def write_results(path: str | Path, results: dict) -> Path:
    """Write a benchmark's results as indented JSON at ``path`` (folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path
