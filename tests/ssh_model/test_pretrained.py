"""The model shipped in the package: present, safe to load, and it really harmonizes."""

import numpy as np
import pytest
import torch

from pipeline.evaluation import downscaled
from ssh_model.checkpoints import load_model_metadata
from ssh_model.composites import blob_mask
from ssh_model.images import read_image
from ssh_model.inference import harmonize
from ssh_model.metrics import fmse
from ssh_model.pretrained import MODEL_CARD, PRETRAINED_FILE, load_pretrained
from ssh_model.quality_set import graded_composite
from ssh_model.samples import sample_photo

PHOTOS = ("astronaut", "chelsea", "coffee", "flower")  # bundled with scikit-image / scikit-learn


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_pretrained()


def test_given_the_installed_package_when_the_weights_are_read_then_they_are_small_safetensors_with_a_card():
    data = PRETRAINED_FILE.read_bytes()
    header = int.from_bytes(data[:8], "little")
    assert data[8:9] == b"{" and header < len(data), "a safetensors header, not a pickle"
    assert len(data) <= 10 * 2**20
    metadata = load_model_metadata(str(PRETRAINED_FILE))
    assert metadata["format"].startswith("ssh-harmonizer/")
    card = MODEL_CARD.read_text(encoding="utf-8")
    for needed in ("Model card", "BSDS500", "ImageNet", "non-commercial", "ssh-harmonize retrain", "quality-table:start"):
        assert needed in card


def test_given_strongly_regraded_composites_when_harmonized_by_the_shipped_model_then_the_foreground_error_falls(model):
    # given: photos the model never trained on, a foreground re-graded by a photographic edit of the strong bucket
    before, after = [], []
    for index, name in enumerate(PHOTOS):
        photo = downscaled(read_image(sample_photo(name)), 384)
        rng = np.random.default_rng([7, index])
        case = graded_composite(name, photo, blob_mask(*photo.shape[:2], rng), "strong", rng)
        # when
        output = harmonize(case.composite, case.mask, model)
        # then: pixels outside the mask are untouched, the foreground moves towards the truth
        assert np.array_equal(output[case.mask == 0], case.composite[case.mask == 0])
        before.append(fmse(case.composite, case.target, case.mask))
        after.append(fmse(output, case.target, case.mask))
    # measured: 28 % lower (3786 -> 2724); an identity or broken model gives 0 % or worse
    assert np.mean(after) <= 0.8 * np.mean(before), (before, after)


def test_given_an_untouched_photo_when_harmonized_then_the_shipped_model_leaves_it_nearly_alone(model):
    photo = downscaled(read_image(sample_photo("coffee")), 256)
    mask = blob_mask(*photo.shape[:2], np.random.default_rng(3))
    output = harmonize(photo, mask, model)
    assert fmse(output, photo, mask) < 60.0  # an RMS change under ~8 levels where nothing was wrong
