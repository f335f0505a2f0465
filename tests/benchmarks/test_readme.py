"""The README's and the model card's quality tables are generated from the committed benchmark JSON."""

import json

import pytest

from benchmarks.readme import DOCUMENTS, END, QUALITY_JSON, START, main, quality_block, replace_block


def test_given_the_committed_quality_json_when_checked_then_every_generated_block_matches_it():
    result = json.loads(QUALITY_JSON.read_text())
    block = quality_block(result)
    for path in DOCUMENTS:
        text = path.read_text(encoding="utf-8")
        assert replace_block(text, block, path.name) == text, f"{path.name}: run python -m benchmarks.readme"
    assert main(["--check"]) == 0


def test_given_a_hand_edited_table_when_the_block_is_replaced_then_the_edit_is_gone():
    text = f"intro\n{START}\n| typed | 99.9 |\n{END}\noutro\n"
    updated = replace_block(text, "| generated |", "doc")
    assert updated == f"intro\n{START}\n| generated |\n{END}\noutro\n"
    with pytest.raises(ValueError, match="exactly one"):
        replace_block("no markers here", "x", "doc")
