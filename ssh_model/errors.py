"""The library's typed input errors: one base class with a stable ``reason`` code, and the map from
storage exceptions (fsspec, s3fs/botocore, aiohttp, the OS) to those codes.

A problem with one item (an image URL, a catalog row) is raised once, where it is found, as a
``HarmonizeInputError`` whose message names the item and whose ``reason`` is one of ``REASONS``;
the batch job stores that code in its results table, so the codes never change meaning.

``storage_error`` turns whatever a read or write raised into such an error. It looks through the
exception's causes, so a ``FileNotFoundError`` that fsspec's HTTP filesystem raises for a refused
connection is ``unreachable``, not ``missing``; and it never puts credentials in the message.
``is_transient`` says whether waiting and trying again can help (refused or reset connections,
unreachable endpoints, timeouts, HTTP 5xx and throttling).
"""

from __future__ import annotations

import re
import socket
from typing import ClassVar

# Storage problems: what ``storage_error`` gives.
STORAGE_REASONS = {
    "unsupported_url": "an unknown URL scheme, or a filesystem backend that is not installed (gs:// without gcsfs)",
    "unreachable": "the endpoint cannot be reached: connection refused or reset, unknown host, no route",
    "forbidden": "the storage refused access (HTTP 401/403, AccessDenied, a local permission error, no credentials)",
    "missing": "no such file or object (HTTP 404, NoSuchKey, NoSuchBucket)",
    "timeout": "connecting or reading took too long",
    "io": "another storage error (HTTP 5xx, throttling, a local I/O error)",
}
# Image problems: what ``ssh_model.images`` gives when decoding.
IMAGE_REASONS = {
    "empty": "zero bytes",
    "unreadable": "not an image this library can decode (a bad image)",
    "truncated": "the file is cut short",
    "too_small": "under the minimum side",
    "too_large": "width x height over the pixel limit (SSH_MAX_IMAGE_PIXELS or the max_pixels given)",
    "not_rgb": "no colour channels where a colour photo is required",
}
# Problems with what is given to harmonize: raised by ``ssh_model.inputs`` and
# ``ssh_model.regions``, where they are found; the batch job and the CLI report them as they are.
ROW_REASONS = {
    "bad_array": "an in-memory image or mask of the wrong type, shape or value range",
    "no_mask": "no mask was given and the composite has no transparency (alpha) to use as one",
    "mask_size": "the mask (or reference mask) and its image differ in size",
    "empty_mask": "the mask selects no pixel",
    "full_mask": "the mask covers the whole composite (or all but a sliver) and there is no background photo",
    "empty_reference": "the reference mask selects no background pixel, or too few to see",
    "target_size": "the ground truth and the composite differ in size",
    "unsafe_output": "the output URL is outside the output prefix, contains '..', has no image extension, or is reserved",
    "invalid": "other input the library refuses",
    "internal": "a bug, not the input: logged with its traceback (please report it)",
}
REASONS: dict[str, str] = {**STORAGE_REASONS, **IMAGE_REASONS, **ROW_REASONS}

MAX_DETAIL_CHARS = 300
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s\"']+@")
_TIMEOUT_NAMES = frozenset(
    {"TimeoutError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectTimeout", "ReadTimeout", "ServerTimeoutError"}
)
_CONNECTION_NAMES = frozenset(
    {"ConnectionError", "EndpointConnectionError", "ConnectionClosedError", "ClientConnectionError", "ProxyConnectionError"}
)
_THROTTLING_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequests",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
_FORBIDDEN_CODES = frozenset(
    {
        "AccessDenied",
        "Forbidden",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AllAccessDisabled",
        "401",
        "403",
    }
)
_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404"})
_PHRASES = {
    "unsupported_url": "unsupported URL",
    "unreachable": "cannot reach the storage endpoint",
    "forbidden": "access forbidden",
    "missing": "no such file or object",
    "timeout": "timed out",
    "io": "storage error",
}


class HarmonizeInputError(ValueError):
    """A problem with one input item; ``reason`` is a stable code (see ``REASONS``), the message names the item.

    Args:
        reason: the machine-readable cause, e.g. "unreachable".
        message: what happened, naming the item (a URL or a row id).
        transient: trying again later may succeed (a network problem, not a bad input).
    """

    allowed_reasons: ClassVar[frozenset[str]] = frozenset(REASONS)

    def __init__(self, reason: str, message: str, *, transient: bool = False) -> None:
        if reason not in self.allowed_reasons:
            raise ValueError(
                f"unknown {type(self).__name__} reason {reason!r}; expected one of {sorted(self.allowed_reasons)}"
            )
        super().__init__(message)
        self.reason = reason
        self.transient = transient

    def __reduce__(self):  # pickles (Ray, Prefect) with its reason, not just the message
        return _rebuild, (type(self), self.reason, str(self), self.transient)


def _rebuild(kind: type[HarmonizeInputError], reason: str, message: str, transient: bool) -> HarmonizeInputError:
    return kind(reason, message, transient=transient)


# Model problems: what loading a model by URI gives (``pipeline.registry.load_registered_model``), besides the
# storage reasons of reading a model file.
MODEL_REASONS = {
    "no_registry": "a models:/ URI, but MLFLOW_TRACKING_URI is not set and there is no MLflow store yet",
    "unknown_model": "the registry has no such model, version or alias, or the URI is not models:/name@alias "
    "or models:/name/N",
    "not_a_model": "the file is not a model checkpoint (a safetensors file written by save_model)",
}


class ModelError(HarmonizeInputError):
    """A model that cannot be loaded; ``reason`` is a storage reason or one of ``MODEL_REASONS``, and the
    message names the model URI as the user gave it."""

    allowed_reasons: ClassVar[frozenset[str]] = frozenset(STORAGE_REASONS) | frozenset(MODEL_REASONS)


class UnknownModelError(ModelError, LookupError):
    """A ``models:/`` URI the registry cannot resolve (also a ``LookupError``, as registry lookups were)."""


def redact(text: str) -> str:
    """``text`` without the ``user:password@`` part of any URL in it."""
    return _USERINFO.sub(r"\g<scheme>***@", text)


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from (as a traceback shows them), most recent first."""
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return chain


def _names(err: BaseException) -> set[str]:
    return {kind.__name__ for kind in type(err).__mro__}


def _response_code(err: BaseException) -> tuple[int | None, str]:
    """(HTTP status, service error code) of an aiohttp ClientResponseError or a botocore ClientError."""
    status = getattr(err, "status", None)
    response = getattr(err, "response", None)
    code = ""
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", status)
    return (status if isinstance(status, int) else None), code


def _network_cause(err: BaseException) -> tuple[str, bool] | None:
    """(reason, transient) when ``err`` itself is a network condition or an HTTP/S3 error response."""
    names = _names(err)
    if isinstance(err, TimeoutError) or names & _TIMEOUT_NAMES:
        return "timeout", True
    if isinstance(err, ConnectionError | socket.gaierror) or names & _CONNECTION_NAMES:
        return "unreachable", True
    status, code = _response_code(err)
    if code in _THROTTLING_CODES or (status is not None and (status >= 500 or status == 429)):
        return "io", True
    if code in _FORBIDDEN_CODES or status in (401, 403):
        return "forbidden", False
    if code in _MISSING_CODES or status == 404:
        return "missing", False
    return None


def _local_cause(err: BaseException) -> tuple[str, bool] | None:
    """(reason, transient) from the exception's type alone."""
    if isinstance(err, PermissionError) or "NoCredentialsError" in _names(err):
        return "forbidden", False
    if isinstance(err, FileNotFoundError | IsADirectoryError | NotADirectoryError):
        return "missing", False
    if isinstance(err, ImportError | ValueError):  # fsspec: no backend installed, unknown protocol, bad bucket
        return "unsupported_url", False
    if isinstance(err, OSError):
        return "io", True
    return None


def classify(err: BaseException) -> tuple[str, bool, BaseException]:
    """(reason, transient, the exception that decided) for an exception raised by a storage call.

    A network condition anywhere in the chain of causes wins over the wrapper's type (fsspec's
    HTTP filesystem reports a refused connection as ``FileNotFoundError``); a typed error keeps
    its own reason. Anything unrecognised is ``io`` and not transient.
    """
    chain = _chain(err)
    for item in chain:
        if isinstance(item, HarmonizeInputError):
            return item.reason, item.transient, item
        if (found := _network_cause(item)) is not None:
            return (*found, item)
    for item in chain:
        if (found := _local_cause(item)) is not None:
            return (*found, item)
    return "io", False, err


def is_transient(err: BaseException | None) -> bool:
    """True when trying again may help: refused or reset connections, unreachable endpoints, timeouts,
    HTTP 5xx and throttling (and other OS-level I/O errors); False for missing or forbidden objects,
    bad URLs and bad data."""
    return isinstance(err, BaseException) and classify(err)[1]


def _detail(err: BaseException) -> str:
    """``Type: message`` on one line, ``Type: file: why`` for OS errors that name their file."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"{err.filename}: {err.strerror}"
    else:
        text = " ".join(str(err).split()) or "no message"
    return redact(f"{type(err).__name__}: {text}")[:MAX_DETAIL_CHARS]


def storage_error(
    err: BaseException, url: str, role: str = "", error_class: type[HarmonizeInputError] = HarmonizeInputError
) -> HarmonizeInputError:
    """The typed, one-line error for ``err`` raised while reading or writing ``url``.

    Args:
        err: what the storage call raised (a typed error is returned as it is).
        url: the item; named in the message (without credentials).
        role: what the item is, e.g. "composite" or "catalog"; starts the message.
        error_class: the class to build (``ssh_model.images.ImageError`` for image reads).
    """
    if isinstance(err, HarmonizeInputError):
        return err
    reason, transient, decided = classify(err)
    where = f"{role} {redact(url)}" if role else redact(url)
    phrase = _PHRASES[reason]
    if reason == "unsupported_url" and isinstance(decided, ImportError):
        phrase = "no filesystem backend for this URL scheme is installed"
    return error_class(reason, f"{where}: {phrase} ({_detail(decided)})", transient=transient)


__all__ = [
    "MODEL_REASONS",
    "REASONS",
    "HarmonizeInputError",
    "ModelError",
    "UnknownModelError",
    "classify",
    "is_transient",
    "redact",
    "storage_error",
]
