"""Distributed training on a real local Ray (2 CPUs): DDP on gloo, checkpoints, resume, no starvation."""

import os

import mlflow
import numpy as np
import pytest
import ray
import torch

from pipeline.evaluation import selection_composites, selection_score
from pipeline.tracking import RunRecorder, tracked_run
from pipeline.training import InsufficientResources, run_training
from pipeline.training_events import event_line
from pipeline.training_worker import STATE_FILE, TrainingJob, resume_position
from ssh_model import storage
from ssh_model.checkpoints import load_training_state
from ssh_model.images import encode_image
from ssh_model.network import ssh_tiny
from ssh_model.train import TrainConfig
from tests.pipeline.training_cases import build_version_with_ray, mlflow_store, smooth_photo, write_triplet_version


def tiny_job(data: str, steps: int, **options) -> TrainingJob:
    cfg = TrainConfig(steps=steps, batch_size=2, lr=2e-4, log_every=1, sample_every=2, warmup_steps=1, seed=0)
    return TrainingJob(data=data, model="tiny", train=cfg, checkpoint_every=2, loader_workers=0, threads=1, **options)


@pytest.mark.timeout(300)  # a Ray Data / Ray Train starvation hang fails here instead of stalling the suite
def test_given_a_ray_data_build_when_two_workers_train_then_they_finish_and_log_to_mlflow(tmp_path, ray_local):
    data_root = str(tmp_path / "data")
    root = build_version_with_ray(data_root, np.random.default_rng(1), photos=4)  # Ray Data, same session
    with mlflow_store(data_root), tracked_run("two-workers") as run:
        recorder = RunRecorder(run.info.run_id)
        outcome = run_training(
            tiny_job(root, steps=4),
            run_name="two-workers",
            storage_root=f"{data_root}/training",
            num_workers=2,
            use_gpu=False,
            max_failures=0,
            resource_wait_s=60,
            on_event=recorder.record,
        )
        client = mlflow.MlflowClient()
        losses = client.get_metric_history(run.info.run_id, "loss/total")
        throughput = client.get_metric_history(run.info.run_id, "samples_per_s")
        images = client.list_artifacts(run.info.run_id, "images")

    assert outcome.steps == 4 and outcome.start_steps == [0]
    assert [p["step"] for p in outcome.progress] == [1, 2, 3, 4]
    assert outcome.summary["world_size"] == 2 and outcome.summary["triplets"] == 4 * 2 * 2
    assert sorted(m.step for m in losses) == [1, 2, 3, 4] and all(np.isfinite(m.value) for m in losses)
    assert all(m.value > 0 for m in throughput) and len(images) >= 2  # sample grids at steps 2 and 4
    assert outcome.checkpoint_path.endswith("step-00000004")
    assert os.path.exists(os.path.join(outcome.checkpoint_path, STATE_FILE))
    torch.manual_seed(0)
    untrained = ssh_tiny().state_dict()
    assert any(not torch.equal(v, untrained[k]) for k, v in outcome.model.state_dict().items())
    assert "samples/s" in event_line(outcome.progress[-1]) and "eta" in event_line(outcome.progress[-1])


@pytest.mark.timeout(300)
def test_given_a_worker_killed_at_step_3_when_training_on_s3_then_it_resumes_from_the_step_2_checkpoint(
    tmp_path, ray_local, s3_prefix
):
    # given a version on S3, a held-out photo for checkpoint selection, and rank 0 set to die at step 3
    rng = np.random.default_rng(2)
    root = write_triplet_version(f"{s3_prefix}/triplets/v1", rng, {"train": 2})
    held_out = f"{s3_prefix}/images/held-out.png"
    storage.write_bytes_atomic(held_out, encode_image(smooth_photo(rng), "PNG"))
    marker = str(tmp_path / "killed-once")

    def exit_once_at_step_3(step: int, rank: int) -> None:  # runs in the Ray Train workers (pickled by value)
        if step == 3 and rank == 0 and not os.path.exists(marker):
            with open(marker, "w") as handle:
                handle.write("exited at step 3\n")
            os._exit(17)

    job = tiny_job(root, steps=4, step_hook=exit_once_at_step_3, select_photos=(held_out,))
    events: list[dict] = []
    # when it trains with one failure allowed
    outcome = run_training(
        job,
        run_name="killed",
        storage_root=f"{s3_prefix}/training",
        num_workers=2,
        use_gpu=False,
        max_failures=1,
        resource_wait_s=60,
        on_event=events.append,
    )

    # then it resumed from the step-2 checkpoint and finished
    steps = [p["step"] for p in outcome.progress]
    assert os.path.exists(marker)  # the worker really exited at step 3 on the first attempt
    assert outcome.start_steps == [0, 2] and outcome.steps == 4
    assert steps[steps.index(3) + 1 :] == [3, 4]  # after the restart the count goes on from 2, not from 0
    assert outcome.checkpoint_path == f"{s3_prefix}/training/killed/step-00000004"
    step, extra = load_training_state(storage.join(outcome.checkpoint_path, STATE_FILE), ssh_tiny())
    assert step == 4
    # and the model it returns is the best scored on the held-out composites, across both attempts
    scores = {event["step"]: event["select_psnr"] for event in events if event["kind"] == "select"}
    assert sorted(scores) == [0, 2, 4]  # before training, then each checkpoint (2 before the crash, 4 after)
    assert outcome.selected_step == max(scores, key=scores.get) == extra["best_step"]
    assert outcome.selected_psnr == pytest.approx(max(scores.values()))
    again = selection_score(outcome.model, selection_composites([held_out]))
    assert again == pytest.approx(outcome.selected_psnr, abs=1e-3)


@pytest.mark.timeout(120)
def test_given_the_cpus_are_taken_when_training_starts_then_it_refuses_instead_of_waiting_forever(tmp_path, ray_local):
    root = write_triplet_version(str(tmp_path / "v1"), np.random.default_rng(3), {"train": 1})

    @ray.remote(num_cpus=2)
    class Hog:  # e.g. a Ray Data actor pool that did not let go of the CPUs
        def ready(self) -> bool:
            return True

    hog = Hog.remote()
    ray.get(hog.ready.remote())
    try:
        with pytest.raises(InsufficientResources, match="only .* are: something else holds them"):
            run_training(
                tiny_job(root, steps=2),
                run_name="starved",
                storage_root=str(tmp_path / "training"),
                num_workers=2,
                use_gpu=False,
                max_failures=0,
                resource_wait_s=2,
            )
    finally:
        ray.kill(hog)


def test_given_steps_when_resuming_then_the_epoch_and_the_batches_left_follow():
    assert resume_position(0, 4) == (0, 4)
    assert resume_position(6, 4) == (1, 2)
    assert resume_position(8, 4) == (2, 4)
