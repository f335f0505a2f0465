"""The typed input errors: stable reason codes, one-line messages naming the item (never credentials), the causes
behind fsspec's wrappers, and Pillow's own pixel limit never quoted instead of ours."""

import pickle

import pytest

from ssh_model.errors import REASONS, HarmonizeInputError, classify, redact, storage_error
from ssh_model.images import ImageError, decode_image, probe_image
from ssh_model.storage import read_bytes
from tests.ssh_model.test_images import png_with_header_size


def raised_by(url: str) -> BaseException:
    try:
        read_bytes(url)
    except Exception as err:  # noqa: BLE001 - the instance is what the test inspects
        return err
    raise AssertionError(f"{url} was read")


@pytest.mark.parametrize(
    ("url", "reason", "says"),
    [
        ("foo://bucket/a.png", "unsupported_url", "unsupported URL (ValueError: Protocol not known: foo)"),
        ("gs://bucket/a.png", "unsupported_url", "no filesystem backend for this URL scheme is installed"),
        ("http://127.0.0.1:1/a.png", "unreachable", "cannot reach the storage endpoint (ClientConnectorError"),
        ("memory://errors-test/none.png", "missing", "no such file or object"),
    ],
)
def test_given_a_storage_failure_when_typed_then_the_reason_is_its_cause_and_the_message_one_line(url, reason, says):
    error = storage_error(raised_by(url), url, "composite")

    assert error.reason == reason
    assert str(error).startswith(f"composite {url}: ")
    assert says in str(error) and "\n" not in str(error)


def test_given_fsspecs_not_found_for_a_refused_connection_when_classified_then_it_is_unreachable_not_missing():
    err = raised_by("http://127.0.0.1:1/x.png")

    assert isinstance(err, FileNotFoundError)
    assert classify(err)[:2] == ("unreachable", True)


def test_given_credentials_in_a_url_when_typed_then_the_message_hides_them():
    url = "http://alice:s3cr3t@127.0.0.1:1/x.png"

    message = str(storage_error(raised_by(url), url, "mask"))

    assert "s3cr3t" not in message and "alice" not in message and "http://***@127.0.0.1:1/x.png" in message
    assert redact("see s3://k:v@b/x and http://h/y") == "see s3://***@b/x and http://h/y"


def test_given_typed_errors_when_pickled_then_class_reason_and_transience_survive():
    for error in (HarmonizeInputError("unreachable", "a: b", transient=True), ImageError("too_large", "c: d")):
        copy = pickle.loads(pickle.dumps(error))
        assert (type(copy), copy.reason, str(copy), copy.transient) == (
            type(error),
            error.reason,
            str(error),
            error.transient,
        )


def test_given_image_errors_then_they_are_typed_input_errors_with_known_reasons_only():
    assert issubclass(ImageError, HarmonizeInputError) and issubclass(HarmonizeInputError, ValueError)
    assert ImageError("missing", "x").reason == "missing"  # storage reasons too, for read_image
    with pytest.raises(ValueError, match="unknown ImageError reason 'mask_size'"):
        ImageError("mask_size", "x")
    with pytest.raises(ValueError, match="unknown HarmonizeInputError reason 'bogus'"):
        HarmonizeInputError("bogus", "x")
    assert {
        "unsupported_url",
        "unreachable",
        "forbidden",
        "missing",
        "timeout",
        "unreadable",
        "too_large",
        "mask_size",
        "empty_mask",
        "unsafe_output",
    } <= set(REASONS)


def test_given_an_image_over_pillows_own_limit_when_decoded_then_the_message_quotes_our_limit():
    bomb = png_with_header_size(20000, 20000)  # 400 Mpx: over Pillow's 179 Mpx bomb limit as well

    for call in (probe_image, decode_image):
        with pytest.raises(ImageError) as caught:
            call(bomb, "bomb.png", max_pixels=50_000_000)
        assert str(caught.value) == "bomb.png: 400000000 pixels is over the limit of 50000000 pixels"


def test_given_a_limit_above_pillows_when_an_image_passes_ours_then_the_message_says_whose_limit_refused_it():
    with pytest.raises(ImageError) as caught:
        probe_image(png_with_header_size(20000, 20000), "bomb.png", max_pixels=500_000_000)

    assert caught.value.reason == "too_large"
    assert "over Pillow's decompression-bomb limit" in str(caught.value) and "500000000" in str(caught.value)
