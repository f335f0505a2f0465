"""One way to say how far a long job is: done / total, rate, elapsed time and ETA on one line."""

from __future__ import annotations

import math


def format_duration(seconds: float) -> str:
    """h:mm:ss of a duration in seconds (negative counts as 0; an unknown one is "?")."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(max(0.0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress_line(done: int, total: int, elapsed_s: float, unit: str = "rows") -> str:
    """``"12/40 rows (30%), 2.00 rows/s, elapsed 0:00:06, eta 0:00:14"``."""
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else math.inf
    return (
        f"{done}/{total} {unit} ({done / max(1, total):.0%}), {rate:.2f} {unit}/s, "
        f"elapsed {format_duration(elapsed_s)}, eta {format_duration(eta)}"
    )


__all__ = ["format_duration", "progress_line"]
