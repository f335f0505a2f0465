"""Safetensors checkpoints: model round trips (local and memory://), training state resumes exactly."""

import json
import uuid

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ssh_model.checkpoints import (
    CheckpointError,
    load_model,
    load_model_metadata,
    load_training_state,
    save_model,
    save_training_state,
)
from ssh_model.losses import ssh_losses
from ssh_model.network import SSHNet, images_to_tensor, ssh_tiny
from ssh_model.storage import read_bytes, write_bytes_atomic
from ssh_model.train import TrainConfig, make_optimizer


def random_batch(seed: int, batch: int = 2, size: int = 32) -> list[torch.Tensor]:
    """Four (B, 3, S, S) tensors in [-1, 1]: content_a, reference_a, reference_b, content_b."""
    rng = np.random.default_rng(seed)
    return [images_to_tensor(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)) for _ in range(4)]


def trained_tiny(seed: int = 0, steps: int = 2) -> tuple[SSHNet, torch.optim.Optimizer]:
    """A tiny network after a few AdamW steps (non-trivial weights, norm buffers and optimizer state)."""
    torch.manual_seed(seed)
    model = SSHNet(width=4, norm="batch")
    optimizer = make_optimizer(model, TrainConfig(steps=10, batch_size=2, lr=1e-3, warmup_steps=1, log_every=1, seed=0))
    for i in range(steps):
        take_step(model, optimizer, random_batch(100 + i))
    return model, optimizer


def take_step(model: SSHNet, optimizer: torch.optim.Optimizer, batch: list[torch.Tensor]) -> None:
    model.train()
    optimizer.zero_grad()
    ssh_losses(model, *batch)["total"].backward()
    optimizer.step()


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


def test_model_round_trips_through_a_local_file(tmp_path):
    # given a trained model saved with extra metadata
    model, _ = trained_tiny()
    url = str(tmp_path / "models" / "model.safetensors")
    save_model(model, url, metadata={"run_id": "abc"})
    # when it is loaded back
    loaded = load_model(url)
    # then it is the same network, in eval mode, with the config and metadata in the file
    assert_same_state(model, loaded)
    assert not loaded.training and loaded.config == model.config
    metadata = load_model_metadata(url)
    assert metadata["format"] == "ssh-harmonizer/1" and metadata["run_id"] == "abc"
    assert json.loads(metadata["config"]) == {"norm": "batch", "width": 4}
    content, reference = random_batch(1)[:2]
    with torch.no_grad():
        torch.testing.assert_close(loaded(content, reference), model.eval()(content, reference))


def test_model_round_trips_through_memory_url():
    # given a model with a non-default norm saved under memory://
    torch.manual_seed(3)
    model = SSHNet(width=4, norm="group")
    url = f"memory://ckpt-{uuid.uuid4().hex}/model.safetensors"
    save_model(model, url)
    # when loaded
    loaded = load_model(url)
    # then the config is rebuilt from the file (group norm) and the weights are equal
    assert loaded.config == {"width": 4, "norm": "group"}
    assert_same_state(model, loaded)


def test_checkpoint_holds_no_pickle(tmp_path):
    # given a saved model
    url = str(tmp_path / "m.safetensors")
    save_model(ssh_tiny(), url)
    data = read_bytes(url)
    # then the file is plain safetensors: an 8-byte length, a JSON header, raw tensor bytes
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    assert header["__metadata__"]["format"] == "ssh-harmonizer/1"
    assert b"\x80\x04" not in data[: 8 + size]  # no pickle protocol marker in the header


def test_non_safetensors_file_gives_a_clear_error(tmp_path):
    # given files that are not model checkpoints
    garbage = str(tmp_path / "garbage.safetensors")
    write_bytes_atomic(garbage, np.random.default_rng(0).bytes(200))
    torch_pickle = str(tmp_path / "model.pt")
    torch.save(ssh_tiny().state_dict(), torch_pickle)
    # then loading names the file and says what is wrong
    with pytest.raises(CheckpointError, match="garbage.safetensors: not a safetensors file"):
        load_model(garbage)
    with pytest.raises(CheckpointError, match=r"model\.pt: not a safetensors file"):
        load_model(torch_pickle)


def test_wrong_format_gives_a_clear_error(tmp_path):
    # given a training-state file and a foreign safetensors file
    model, optimizer = trained_tiny(steps=1)
    state_url = str(tmp_path / "state.safetensors")
    save_training_state(state_url, model, optimizer, step=1, extra={})
    foreign = str(tmp_path / "foreign.safetensors")
    save_file({"w": torch.ones(2)}, foreign)
    # then load_model refuses both, naming the format found
    with pytest.raises(CheckpointError, match="ssh-harmonizer-training/1"):
        load_model(state_url)
    with pytest.raises(CheckpointError, match="format is None"):
        load_model(foreign)


def test_reserved_metadata_keys_are_refused(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        save_model(ssh_tiny(), str(tmp_path / "m.safetensors"), metadata={"config": "x"})


def test_training_state_resumes_exactly(tmp_path):
    # given a model and AdamW after two steps, saved to a training-state file
    model, optimizer = trained_tiny(seed=5, steps=2)
    url = f"memory://state-{uuid.uuid4().hex}/state.safetensors"
    save_training_state(url, model, optimizer, step=2, extra={"epoch": 1, "note": "x"})
    # when a fresh model + optimizer are restored from it and both take the same next step
    torch.manual_seed(99)
    resumed = SSHNet(width=4, norm="batch")
    resumed_optimizer = make_optimizer(
        resumed, TrainConfig(steps=10, batch_size=2, lr=1e-3, warmup_steps=1, log_every=1, seed=0)
    )
    step, extra = load_training_state(url, resumed, resumed_optimizer)
    assert (step, extra) == (2, {"epoch": 1, "note": "x"})
    assert_same_state(model, resumed)
    next_batch = random_batch(7)
    take_step(model, optimizer, next_batch)
    take_step(resumed, resumed_optimizer, next_batch)
    # then the weights after the step are identical (AdamW moments and step counts came back)
    assert_same_state(model, resumed)
    original_state = optimizer.state_dict()["state"][0]
    assert torch.equal(resumed_optimizer.state_dict()["state"][0]["exp_avg"], original_state["exp_avg"])
    assert float(resumed_optimizer.state_dict()["state"][0]["step"]) == 3.0


def test_training_state_for_another_model_is_refused(tmp_path):
    model, optimizer = trained_tiny(steps=1)
    url = str(tmp_path / "state.safetensors")
    save_training_state(url, model, optimizer, step=1)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_training_state(url, SSHNet(width=8))
