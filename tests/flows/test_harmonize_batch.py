"""Flow ``harmonize-batch`` through Prefect's test harness, on real local Ray and the real local S3 server."""

import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from flows.harmonize_batch import harmonize_batch
from pipeline.catalog import write_catalog
from pipeline.configs import BatchConfig
from ssh_model.storage import exists, read_bytes, write_bytes_atomic
from tests.pipeline.batch_cases import save_tiny_model, write_case

pytestmark = pytest.mark.usefixtures("prefect_harness", "ray_local")


@pytest.fixture
def s3_prefix(flow_s3_bucket) -> str:
    return f"s3://{flow_s3_bucket}/flow-{uuid.uuid4().hex[:8]}"


def artifacts_of(state) -> dict[str, str]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    return {a.key: a.data for a in found}


def test_given_an_s3_catalog_when_the_flow_runs_then_outputs_results_report_and_artifacts_exist(s3_prefix, run_logs):
    rng = np.random.default_rng(21)
    rows = [write_case(s3_prefix, f"img-{i}", rng) for i in range(3)] + [write_case(s3_prefix, "broken", rng)]
    write_bytes_atomic(rows[-1]["composite"], b"\xff\xd8 not really a jpeg")
    catalog = f"{s3_prefix}/catalog.parquet"
    write_catalog(rows, catalog)
    model = save_tiny_model(f"{s3_prefix}/models/tiny.safetensors")

    state = harmonize_batch(
        catalog=catalog,
        output_prefix=f"{s3_prefix}/out",
        config=BatchConfig(model_uri=model, max_error_rate=0.3, concurrency=1, jpeg_quality=85),
        return_state=True,
    )

    summary = state.result()
    assert (summary["ok"], summary["error"], summary["total"]) == (3, 1, 4)
    assert all(exists(f"{s3_prefix}/out/img-{i}.jpg") for i in range(3))
    assert not exists(f"{s3_prefix}/out/broken.jpg")
    results = pq.read_table(pa.BufferReader(read_bytes(summary["results_url"]))).to_pylist()
    assert summary["results_url"] == f"{s3_prefix}/out/_results/results.parquet"
    assert sorted(r["id"] for r in results) == ["broken", "img-0", "img-1", "img-2"]
    assert {r["id"]: r["reason"] for r in results if r["status"] == "error"} == {"broken": "unreadable"}
    assert all(r["model_psnr"] > 0 for r in results if r["status"] == "ok")
    report = read_bytes(summary["report_url"]).decode()
    assert report.count("<img") >= 9 and "unreadable" in report
    assert any(summary["report_url"] in m for m in run_logs)
    assert any(m.startswith("progress 4/4 rows") and "rows/s" in m for m in run_logs)
    artifacts = artifacts_of(state)
    assert summary["report_url"] in artifacts["harmonize-batch-report"]
    assert "| ok / skipped / error | 3 / 0 / 1 |" in artifacts["harmonize-batch-summary"]


def test_given_more_errors_than_allowed_when_the_flow_runs_then_it_fails_with_counts_after_publishing(
    s3_prefix, tiny_model_url
):
    rng = np.random.default_rng(22)
    rows = [
        write_case(s3_prefix, "fine", rng),
        {**write_case(s3_prefix, "gone", rng), "mask": f"{s3_prefix}/in/no-such-mask.png"},
    ]
    catalog = f"{s3_prefix}/catalog.csv"
    write_catalog(rows, catalog)

    state = harmonize_batch(
        catalog=catalog,
        output_prefix=f"{s3_prefix}/out",
        config={"model_uri": tiny_model_url, "max_error_rate": 0.25, "concurrency": 1},  # as a deployment sends it
        return_state=True,
    )

    assert state.is_failed()
    with pytest.raises(
        RuntimeError,
        match=r"1 of 2 rows failed \(50.0%\), more than max_error_rate 25.0% "
        r"\(missing: 1\)",
    ):
        state.result()
    assert exists(f"{s3_prefix}/out/fine.jpg")
    assert exists(f"{s3_prefix}/out/_results/results.parquet")
    assert exists(f"{s3_prefix}/out/_results/report.html")


def test_given_an_invalid_catalog_when_the_flow_runs_then_it_fails_before_reading_any_image(s3_prefix, tiny_model_url):
    rows = [
        {
            "id": "a",
            "composite": f"{s3_prefix}/in/a.png",
            "mask": f"{s3_prefix}/in/am.png",
            "output": f"{s3_prefix}/in/a.png",
        }
    ]
    catalog = f"{s3_prefix}/catalog.jsonl"
    write_catalog(rows, catalog)

    state = harmonize_batch(catalog=catalog, config=BatchConfig(model_uri=tiny_model_url), return_state=True)

    assert state.is_failed()
    with pytest.raises(ValueError, match="row 1 \\(id 'a'\\): output .* is its own input composite"):
        state.result()


def test_given_bad_parameters_when_checked_then_every_problem_is_named():
    with pytest.raises(ValueError) as caught:
        BatchConfig(max_error_rate=1.5, jpeg_quality=0, concurrency=0, num_gpus=-1, batch_size=0, retries=3)

    named = sorted(str(error["loc"][0]) for error in caught.value.errors())
    assert named == ["batch_size", "concurrency", "jpeg_quality", "max_error_rate", "num_gpus", "retries"]
    BatchConfig(max_error_rate=0.0, jpeg_quality=100, concurrency=None, num_gpus=None, batch_size=1)


def test_given_a_config_with_an_unknown_field_when_the_flow_runs_then_it_fails_before_any_work(s3_prefix):
    state = harmonize_batch(catalog=f"{s3_prefix}/none.parquet", config={"max_eror_rate": 0.5}, return_state=True)

    assert state.is_failed()
    with pytest.raises(Exception, match="max_eror_rate"):
        state.result()


def test_given_no_model_and_no_registry_when_the_flow_runs_then_the_shipped_weights_harmonize_and_are_named(
    s3_prefix, run_logs, tmp_path, monkeypatch
):
    monkeypatch.setenv("SSH_MODEL_URI", "")
    monkeypatch.setenv("SSH_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    rows = [write_case(s3_prefix, f"img-{i}", np.random.default_rng(30 + i)) for i in range(2)]
    catalog = f"{s3_prefix}/catalog.parquet"
    write_catalog(rows, catalog)

    summary = harmonize_batch(catalog=catalog, output_prefix=f"{s3_prefix}/out", config=BatchConfig(concurrency=1))

    assert summary["ok"] == 2 and summary["model_version"].startswith("pretrained/sha256:")
    results = pq.read_table(pa.BufferReader(read_bytes(summary["results_url"]))).to_pylist()
    assert {r["model_version"] for r in results} == {summary["model_version"]}
    assert any("no model given" in m and "shipped" in m for m in run_logs)
    assert not (tmp_path / "data").exists()
