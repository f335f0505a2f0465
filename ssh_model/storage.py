"""Every location is an fsspec URL: ``/local/dir``, ``file://...``, ``s3://bucket/key``, ``memory://...``.

One S3 endpoint setting (``SSH_S3_ENDPOINT_URL`` or ``AWS_ENDPOINT_URL``) reaches every component:
s3fs directly and pyarrow through an fsspec wrapper (pyarrow's own S3 filesystem ignores
``AWS_ENDPOINT_URL``). Keys and region come from the standard AWS environment, never from here.
"""

from __future__ import annotations

import os
import posixpath
import uuid

import fsspec
import pyarrow.fs as pafs
from fsspec.core import url_to_fs

from ssh_model.settings import get_settings


def storage_options(url: str) -> dict:
    """fsspec options for ``url``: the configured S3 endpoint for ``s3://`` URLs."""
    if url.startswith(("s3://", "s3a://")):
        endpoint = get_settings().s3_endpoint_url
        return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}
    return {}


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for ``url`` and the path inside it."""
    return url_to_fs(url, **storage_options(url))


def pyarrow_filesystem(url: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem that goes through fsspec, so S3 honours our endpoint setting."""
    fs, path = filesystem(url)
    if fs.protocol in ("file", "local") or "file" in fs.protocol:
        return pafs.LocalFileSystem(), path
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *(p.strip("/") for p in parts)])


def absolute(url: str) -> str:
    """``url`` with a relative local path made absolute (other URLs unchanged): processes that run
    elsewhere (Ray Train workers start in their own folder) must not resolve it against their cwd."""
    return os.path.abspath(url) if "://" not in url else url


def protocol_of(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "file"


def is_under(url: str, prefix: str) -> bool:
    """True when ``url`` names something inside ``prefix`` (same scheme and bucket, no ``..`` escape)."""
    if protocol_of(url) != protocol_of(prefix):
        return False
    strip = (lambda u: u.split("://", 1)[1]) if "://" in url else (lambda u: u)
    if ".." in strip(url).split("/"):
        return False
    path, root = posixpath.normpath(strip(url)), posixpath.normpath(strip(prefix))
    return path.startswith(root.rstrip("/") + "/")


def read_bytes(url: str) -> bytes:
    fs, path = filesystem(url)
    with fs.open(path, "rb") as handle:
        return handle.read()


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


def write_bytes_atomic(url: str, data: bytes) -> None:
    """Write ``data`` so that a reader never sees a partial object.

    S3 (and memory) PUTs are atomic already; on a local disk we write a hidden temporary
    file next to the target and rename it into place.
    """
    fs, path = filesystem(url)
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    if protocol_of(url) != "file" and "file" not in fs.protocol:
        fs.pipe_file(path, data)
        return
    tmp = posixpath.join(parent, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with fs.open(tmp, "wb") as handle:
            handle.write(data)
        fs.mv(tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)
