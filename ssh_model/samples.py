"""Natural colour photos that ship inside scikit-image and scikit-learn: the embedded data set.

They make a first run work with no downloads and no accounts (ingest's ``builtin://samples``,
the demo, the fixed evaluation set, tests). Only real colour photographs are listed: the
bundled grayscale, synthetic, microscopy and medical images are left out on purpose.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

# (package, file) pairs; motorcycle_left/right are a stereo pair, distinct enough as crops.
_SAMPLES = (
    ("skimage", "data/astronaut.png"),
    ("skimage", "data/chelsea.png"),
    ("skimage", "data/coffee.png"),
    ("skimage", "data/motorcycle_left.png"),
    ("skimage", "data/motorcycle_right.png"),
    ("skimage", "data/rocket.jpg"),
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
)

BUILTIN_SAMPLES_URL = "builtin://samples"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # locate without importing (skimage imports slowly)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name!r} is not installed; the bundled sample photos ship with it")
    return Path(spec.submodule_search_locations[0])


def sample_photo_paths() -> list[str]:
    """Absolute paths of the bundled colour photos, in a fixed order."""
    paths = [str(_package_dir(pkg) / rel) for pkg, rel in _SAMPLES]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(f"bundled sample photos not found (is scikit-image installed?): {missing}")
    return paths


def sample_photo(name: str) -> str:
    """The path of one bundled photo by its stem, e.g. ``sample_photo("coffee")``."""
    for path in sample_photo_paths():
        if Path(path).stem == name:
            return path
    raise KeyError(f"no bundled sample photo named {name!r}")
