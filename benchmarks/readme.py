"""Generated tables: the README's and the model card's quality table come from ``results/quality.json``.

    python -m benchmarks.readme           # rewrite the blocks between the markers
    python -m benchmarks.readme --check   # exit 1 when a block differs from what the JSON gives

A generated block sits between ``<!-- quality-table:start -->`` and ``<!-- quality-table:end -->``; nothing
inside it is typed by hand (``tests/benchmarks/test_readme.py`` holds the files to that).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
QUALITY_JSON = ROOT / "benchmarks" / "results" / "quality.json"
DOCUMENTS = (ROOT / "README.md", ROOT / "ssh_model" / "weights" / "MODEL_CARD.md")
START, END = "<!-- quality-table:start -->", "<!-- quality-table:end -->"


def quality_block(result: dict[str, Any]) -> str:
    """The table and the target checks of a ``bench_quality`` result, as markdown."""
    setup = result["setup"]
    per_bucket = setup["cases_per_bucket"]
    lines = [
        f"{setup['graded_cases']} graded composites of the corpus's holdout photos (mild / medium / strong: "
        f"{per_bucket['mild']} / {per_bucket['medium']} / {per_bucket['strong']}) and {setup['cross_cases']} "
        f"cross-photo composites; `python -m benchmarks.bench_quality` ({setup['wall_s']:.0f} s on "
        f"{setup['cpus']} CPUs, torch threads {setup['torch_threads']}; models: `{setup['models']}`).",
        "",
        result["table"],
    ]
    targets = result.get("targets")
    if targets:
        lines += ["", f"Targets for `{targets['model']}`:", ""]
        for name, check in targets.items():
            if isinstance(check, dict):
                lines.append(
                    f"- {name}: {check['value']} (target {check['target']}): {'met' if check['met'] else '**not met**'}"
                )
    return "\n".join(lines)


def replace_block(text: str, block: str, name: str) -> str:
    """``text`` with the generated block between the markers replaced by ``block``."""
    if text.count(START) != 1 or text.count(END) != 1:
        raise ValueError(f"{name} needs exactly one {START} ... {END} block")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{block}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.readme", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that the blocks are up to date")
    args = parser.parse_args(argv)
    block = quality_block(json.loads(QUALITY_JSON.read_text()))
    stale = []
    for path in DOCUMENTS:
        text = path.read_text(encoding="utf-8")
        updated = replace_block(text, block, path.name)
        if updated != text:
            stale.append(path.name)
            if not args.check:
                path.write_text(updated, encoding="utf-8")
    if args.check and stale:
        print(f"out of date with {QUALITY_JSON.name}: {', '.join(stale)} (run python -m benchmarks.readme)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
