import json
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ssh_model import storage
from ssh_model.dataset import TripletDataset, discover_units, plan_epoch
from ssh_model.train import batch_to_tensors
from tests.ssh_model.shard_cases import write_shards

FILE_ROWS = [70, 45, 37]  # 152 rows in row groups of 16 (the last of each file is short)
BATCH = 8


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards") / "train"
    urls, images = write_shards(str(root), np.random.default_rng(11), FILE_ROWS, rows_per_group=16)
    return str(root.parent), urls, images


def epoch_ids(
    root: str, rank: int, world: int, epoch: int, workers: int, seed: int = 0, drop_last: bool = True
) -> list[list[str]]:
    dataset = TripletDataset(
        root, split="train", batch_size=BATCH, seed=seed, rank=rank, world_size=world, drop_last=drop_last, shuffle_buffer=32
    )
    dataset.set_epoch(epoch)
    loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    batches = [batch["triplet_id"] for batch in loader]
    assert len(batches) == len(dataset) == len(loader)
    return batches


def test_given_two_ranks_and_two_workers_when_an_epoch_runs_then_every_row_is_read_once(shards):
    root, _, images = shards
    per_rank = [[tid for batch in epoch_ids(root, rank, 2, epoch=0, workers=2) for tid in batch] for rank in (0, 1)]
    assert len(per_rank[0]) == len(per_rank[1]) == (152 // (2 * BATCH)) * BATCH  # 72 each, 8 rows dropped
    seen = Counter(per_rank[0] + per_rank[1])
    assert max(seen.values()) == 1
    assert set(seen) <= set(images) and len(images) - len(seen) < 2 * BATCH


def test_given_the_same_seed_and_epoch_then_the_order_repeats_and_another_epoch_reorders(shards):
    root = shards[0]
    first = epoch_ids(root, 0, 2, epoch=3, workers=2)
    assert epoch_ids(root, 0, 2, epoch=3, workers=2) == first
    assert epoch_ids(root, 0, 2, epoch=4, workers=2) != first
    assert epoch_ids(root, 0, 2, epoch=3, workers=2, seed=1) != first
    assert all(len(batch) == BATCH for batch in first)


def test_given_no_drop_last_then_every_row_is_read_and_ranks_still_get_equal_batches(shards):
    root, _, images = shards
    counts = []
    seen: Counter[str] = Counter()
    for rank in range(3):
        batches = epoch_ids(root, rank, 3, epoch=1, workers=2, drop_last=False)
        counts.append((len(batches), sum(len(b) for b in batches)))
        seen.update(tid for batch in batches for tid in batch)
    assert counts == [(7, 51)] * 3  # ceil(152 / 3) = 51 rows each: the stream wraps by one row
    assert set(seen) == set(images) and sum(seen.values()) == 153


def test_plan_gives_workers_whole_batches_and_splits_row_groups_only_at_boundaries(shards):
    units = discover_units(shards[0], "train")
    assert [u.rows for u in units] == [16, 16, 16, 16, 6, 16, 16, 13, 16, 16, 5]
    plans = [
        plan_epoch(
            units,
            batch_size=BATCH,
            epoch=0,
            seed=0,
            shuffle=True,
            rank=rank,
            world_size=2,
            worker=worker,
            num_workers=2,
            drop_last=True,
        )
        for rank in (0, 1)
        for worker in (0, 1)
    ]
    assert [rows for _, rows in plans] == [32, 40, 32, 40]
    covered = Counter((u.url, u.row_group, row) for slices, _ in plans for u in slices for row in range(u.start, u.stop))
    assert max(covered.values()) == 1 and len(covered) == 144


def test_given_batches_then_they_feed_training_as_tensors_with_the_right_pixels(shards):
    root, _, images = shards
    dataset = TripletDataset(root, batch_size=BATCH, shuffle=False, rank=0, world_size=1)
    batch = next(iter(DataLoader(dataset, batch_size=None, num_workers=0)))
    assert batch["content_a"].shape == (BATCH, 16, 16, 3) and batch["content_a"].dtype == torch.uint8
    np.testing.assert_array_equal(batch["content_b"][0].numpy(), images[batch["triplet_id"][0]]["content_b"])
    tensors = batch_to_tensors(batch)
    assert tensors["reference_b"].shape == (BATCH, 3, 16, 16)
    assert float(tensors["reference_b"].min()) >= -1.0 and float(tensors["reference_b"].max()) <= 1.0
    assert batch["content_box"].shape == (BATCH, 4)


def test_given_a_build_manifest_then_units_come_from_it_without_listing(shards, tmp_path):
    root, urls, _ = shards
    build = tmp_path / "v1"
    (build / "train").mkdir(parents=True)
    (build / "train" / "part-00000.parquet").write_bytes(storage.read_bytes(urls[0]))
    manifest = {
        "files": [
            {"path": "train/part-00000.parquet", "split": "train", "rows": 70, "row_groups": [16, 16, 16, 16, 6]},
            {"path": "val/part-00000.parquet", "split": "val", "rows": 3, "row_groups": [3]},
        ]
    }
    (build / "manifest.json").write_text(json.dumps(manifest))
    (build / "train" / "part-00009.parquet").write_bytes(b"an unlisted file is never opened")
    dataset = TripletDataset(str(build), split="train", batch_size=10, shuffle=False, rank=0, world_size=1)
    assert dataset.total_rows == 70 and len(dataset) == 7
    assert sum(len(batch["triplet_id"]) for batch in dataset) == 70


def test_given_too_few_rows_for_a_batch_on_each_rank_then_it_says_so(shards):
    with pytest.raises(ValueError, match="cannot make one batch"):
        TripletDataset(shards[0], batch_size=100, rank=0, world_size=2)


def test_given_torch_distributed_is_initialised_then_rank_and_world_size_come_from_it(shards, tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        dataset = TripletDataset(shards[0], batch_size=BATCH)
        assert dataset.placement() == (0, 1) and len(dataset) == 152 // BATCH
    finally:
        torch.distributed.destroy_process_group()


def test_given_shards_on_s3_when_read_by_two_workers_then_pixels_are_intact(s3_prefix):
    urls, images = write_shards(f"{s3_prefix}/train", np.random.default_rng(12), [30, 20], rows_per_group=8)
    assert all(storage.exists(url) for url in urls)
    dataset = TripletDataset(s3_prefix, split="train", batch_size=5, seed=2, rank=0, world_size=1)
    batches = list(DataLoader(dataset, batch_size=None, num_workers=2))
    ids = [tid for batch in batches for tid in batch["triplet_id"]]
    assert sorted(ids) == sorted(images) and len(batches) == 10
    last = batches[-1]
    expected = images[last["triplet_id"][-1]]["reference_a"]
    np.testing.assert_array_equal(last["reference_a"][-1].numpy(), expected)
