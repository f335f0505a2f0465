"""Retries where they help: which errors are transient (real exception instances from real clients and servers),
and the I/O tasks under Prefect's test harness retrying them with bounded backoff."""

import errno
import socket
import time

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from prefect import flow

from pipeline.catalog import CatalogError, write_catalog
from ssh_model.errors import HarmonizeInputError, is_transient
from ssh_model.images import ImageError
from ssh_model.storage import read_bytes
from tasks.harmonize_tasks import load_catalog
from tests.pipeline.http_cases import FLAKY_FAILURES

PLANTED_SECRET = "planted-secret-4f1c9e"


@flow(name="load-catalog-test")
def load_catalog_flow(url: str, output_prefix: str | None):
    """The task as the harmonize-batch flow runs it."""
    return load_catalog(url, output_prefix)


def raised_by(call, *args) -> BaseException:
    """What ``call(*args)`` raises (it must raise)."""
    try:
        call(*args)
    except Exception as err:  # noqa: BLE001 - the instance is what the test inspects
        return err
    raise AssertionError(f"{call.__name__}{args} did not raise")


def refused_connection() -> OSError:
    with socket.socket() as client:
        return raised_by(client.connect, ("127.0.0.1", 1))


def socket_read_timeout() -> OSError:
    with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(server.getsockname()) as client:
        client.settimeout(0.05)
        return raised_by(client.recv, 1)


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject"
    )


def test_given_network_failures_when_classified_then_each_is_transient(failing_http_server):
    transient = {
        "connection refused": refused_connection(),
        "connection reset": ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        "socket read timeout": socket_read_timeout(),
        "endpoint unreachable": EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        "connect timeout": ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"),
        "read timeout": ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        "S3 SlowDown": client_error("SlowDown", 503),
        "S3 internal error": client_error("InternalError", 500),
        "HTTP 503 (fsspec)": raised_by(read_bytes, f"{failing_http_server.url}/server-error/x.png"),
        "HTTP refused (fsspec FileNotFoundError)": raised_by(read_bytes, "http://127.0.0.1:1/x.png"),
        "s3fs unknown error code": OSError(errno.EIO, "We encountered an internal error"),
        "typed unreachable": HarmonizeInputError("unreachable", "catalog s3://b/c.csv: ...", transient=True),
    }

    assert {name: is_transient(err) for name, err in transient.items()} == dict.fromkeys(transient, True)


def test_given_permanent_failures_or_non_errors_when_classified_then_none_is_transient(failing_http_server, tmp_path):
    permanent = {
        "missing file": raised_by(read_bytes, str(tmp_path / "nope.png")),
        "HTTP 404 (fsspec)": raised_by(read_bytes, f"{failing_http_server.url}/gone/x.png"),
        "HTTP 403 (fsspec)": raised_by(read_bytes, f"{failing_http_server.url}/forbidden/x.png"),
        "permission": PermissionError(errno.EACCES, "Permission denied"),
        "S3 AccessDenied": client_error("AccessDenied", 403),
        "S3 NoSuchKey": client_error("NoSuchKey", 404),
        "unknown scheme": raised_by(read_bytes, "foo://b/x.png"),
        "no credentials": NoCredentialsError(),
        "bad catalog": CatalogError("c.csv", ["row 1: empty mask"]),
        "bad image": ImageError("unreadable", "a.jpg: not a recognised image format"),
        "a bug": KeyError("id"),
        "no error": None,
        "not an exception": "ConnectionRefusedError",
    }

    assert {name: is_transient(err) for name, err in permanent.items()} == dict.fromkeys(permanent, False)


def test_given_a_catalog_behind_a_server_answering_503_when_loaded_then_a_retry_gets_it(
    prefect_harness, failing_http_server, tmp_path
):
    local = str(tmp_path / "c.csv")
    write_catalog([{"id": "a", "composite": "s3://in/a.jpg", "mask": "s3://in/m.png"}], local)
    failing_http_server.files["c.csv"] = read_bytes(local)

    catalog = load_catalog_flow(f"{failing_http_server.url}/flaky/c.csv", "memory://out")

    assert [row.id for row in catalog.rows] == ["a"]
    assert failing_http_server.hits["/flaky/c.csv"] > FLAKY_FAILURES


def test_given_an_unreachable_s3_endpoint_when_the_catalog_is_loaded_then_it_fails_in_well_under_a_minute(
    prefect_harness, monkeypatch
):
    monkeypatch.setenv("SSH_S3_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", PLANTED_SECRET)
    started = time.monotonic()

    with pytest.raises(HarmonizeInputError) as caught:
        load_catalog_flow("s3://nowhere/catalog.csv", None)

    seconds = time.monotonic() - started
    message = str(caught.value)
    assert caught.value.reason == "unreachable" and caught.value.transient
    assert seconds < 45.0  # s3fs and botocore take ~12 s a try; retries stop after IO_RETRY_BUDGET_S
    assert message.startswith("catalog s3://nowhere/catalog.csv: cannot reach the storage endpoint")
    assert "http://127.0.0.1:1" in message and "\n" not in message
    assert PLANTED_SECRET not in message and "test-key-id" not in message
