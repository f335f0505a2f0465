"""Small generated triplet rows and shards for the shard and dataset tests."""

from __future__ import annotations

import hashlib

import numpy as np

from ssh_model.shards import IMAGE_COLUMNS, ShardWriter, encode_pixels, triplet_id


def random_rows(
    rng: np.random.Generator, count: int, size: int = 16, encoding: str = "webp", split: str = "train", start: int = 0
) -> tuple[list[dict], dict[str, dict[str, np.ndarray]]]:
    """``count`` schema rows of random images; also the images by triplet id, to compare decodes with."""
    rows, images = [], {}
    for number in range(start, start + count):
        image_id = hashlib.sha256(f"photo-{number}".encode()).hexdigest()
        pixels = {key: rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8) for key in IMAGE_COLUMNS}
        x0, y0 = (int(v) for v in rng.integers(0, 50, size=2))
        row = {
            "triplet_id": triplet_id(image_id, 7, 0),
            "image_id": image_id,
            "split": split,
            "k": 0,
            "seed": 7,
            "lut_a": f"gen-{number}",
            "lut_b": f"gen-{number + 1}",
            "content_box": [x0, y0, x0 + 40, y0 + 40],
            "reference_box": [y0, x0, y0 + 30, x0 + 30],
            "content_flip": bool(number % 2),
            "reference_flip": bool(number % 3 == 0),
            "layout": "region" if number % 4 == 0 else "crops",
            "crop_size": size,
            "encoding": encoding,
        }
        row.update({key: encode_pixels(pixels[key], encoding) for key in IMAGE_COLUMNS})
        rows.append(row)
        images[row["triplet_id"]] = pixels
    return rows, images


def write_shards(
    root: str,
    rng: np.random.Generator,
    file_rows: list[int],
    rows_per_group: int = 16,
    size: int = 16,
    encoding: str = "webp",
    split: str = "train",
) -> tuple[list[str], dict]:
    """Shards ``{root}/part-NNNNN.parquet`` with ``file_rows[i]`` rows each; returns their URLs and images."""
    urls, images, start = [], {}, 0
    for index, count in enumerate(file_rows):
        rows, made = random_rows(rng, count, size, encoding, split, start)
        start += count
        url = f"{root.rstrip('/')}/part-{index:05d}.parquet"
        with ShardWriter(url, rows_per_group, encoding) as writer:
            for row in rows:
                writer.write(row)
        urls.append(url)
        images.update(made)
    return urls, images
