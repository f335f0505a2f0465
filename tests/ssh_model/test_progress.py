"""The one progress line of long jobs."""

import math

from ssh_model.progress import format_duration, progress_line


def test_progress_line_has_count_share_rate_elapsed_and_eta():
    assert progress_line(12, 40, 6.0) == "12/40 rows (30%), 2.00 rows/s, elapsed 0:00:06, eta 0:00:14"
    assert progress_line(0, 5, 0.0, "shards").endswith("0.00 shards/s, elapsed 0:00:00, eta ?")


def test_format_duration():
    assert format_duration(3725.9) == "1:02:05"
    assert format_duration(-3) == "0:00:00"
    assert format_duration(math.inf) == "?"
