"""The stage configs (``pipeline.configs``): frozen, strict, documented, the only home of the flows' defaults."""

import inspect

import pytest
from pydantic import ValidationError

from flows.build_triplets import build_triplets
from flows.compare_models import compare_models
from flows.demo import demo
from flows.harmonize_batch import harmonize_batch
from flows.ingest_images import ingest_images
from flows.retrain import retrain
from flows.train_model import train_model
from pipeline.configs import (
    BatchConfig,
    CompareConfig,
    IngestConfig,
    TrainModelConfig,
    TripletConfig,
    demo_training,
    demo_triplets,
)
from ssh_model.settings import Settings

CONFIGS = [IngestConfig, TripletConfig, TrainModelConfig, CompareConfig, BatchConfig]
FLOWS = [ingest_images, build_triplets, train_model, retrain, compare_models, harmonize_batch, demo]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.__name__)
def test_given_a_stage_config_when_built_then_it_is_frozen_strict_and_every_field_is_described(config):
    made = config()
    first = next(iter(config.model_fields))

    with pytest.raises(ValidationError):
        made.__setattr__(first, getattr(made, first))
    with pytest.raises(ValidationError, match="no_such_field"):
        config(no_such_field=1)
    assert [name for name, info in config.model_fields.items() if not (info.description or "").strip()] == []
    assert config.model_validate(made.model_dump()) == made  # what MLflow and checkpoints keep rebuilds it


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.name)
def test_given_a_flow_when_its_signature_is_read_then_no_knob_has_a_default_of_its_own(flow):
    # what a flow works on may have a default (a version name, None for "from the settings"); how it works
    # (numbers, switches, lists) comes only from its configs
    defaults = {name: p.default for name, p in inspect.signature(flow.fn).parameters.items()}
    own = {name: value for name, value in defaults.items() if isinstance(value, int | float | bool | list | dict)}
    assert own == {}


def test_given_no_sources_when_an_ingest_config_is_made_then_it_is_refused_rather_than_ingesting_nothing():
    with pytest.raises(ValidationError, match="sources"):
        IngestConfig(sources=[])


def test_given_the_hardware_when_a_train_config_is_resolved_then_unset_fields_follow_it_and_set_ones_stay():
    settings = Settings(seed=7)
    cpu = TrainModelConfig().resolve(gpus=0, settings=settings)
    gpu = TrainModelConfig().resolve(gpus=4, settings=settings)
    chosen = TrainModelConfig(preset="tiny", steps=100, num_workers=3, seed=2).resolve(gpus=4, settings=settings)
    on_cpus = TrainModelConfig(use_gpu=False).resolve(gpus=4, settings=settings)  # asked for: kept

    assert (cpu.preset, cpu.steps, cpu.batch_size, cpu.num_workers, cpu.loader_workers) == ("small", 2000, 8, 2, 0)
    assert (gpu.preset, gpu.steps, gpu.batch_size, gpu.num_workers, gpu.loader_workers) == ("full", 20000, 32, 4, 8)
    assert cpu.warmup_steps == 100 and gpu.warmup_steps == 1000 and cpu.use_gpu is False
    assert (chosen.preset, chosen.steps, chosen.num_workers, chosen.warmup_steps) == ("tiny", 100, 3, 5)
    assert (cpu.seed, gpu.seed, chosen.seed) == (7, 7, 2) and gpu.use_gpu is True
    assert (on_cpus.use_gpu, on_cpus.preset, on_cpus.num_workers) == (False, "small", 2)


def test_given_the_demo_presets_when_built_then_they_differ_from_the_defaults_only_where_the_recipe_says():
    triplets, training = demo_triplets(seed=3), demo_training()

    assert triplets.model_dump(exclude_defaults=True) == {"luts": "generator:3:100:mild", "per_image": 64, "crop_size": 64}
    assert set(training.model_dump(exclude_defaults=True)) == {
        "model_family",
        "preset",
        "steps",
        "batch_size",
        "lr",
        "num_workers",
        "checkpoint_every",
        "eval_max_side",
    }
