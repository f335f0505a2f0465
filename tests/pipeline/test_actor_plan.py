"""Sizing the model actors of the batch job by GPUs, CPUs and memory (pure arithmetic, no Ray)."""

import logging

import pytest

from pipeline.batch_inference import ACTOR_BASE_BYTES, PEAK_BYTES_PER_PIXEL, actor_memory, plan_actors
from pipeline.configs import BatchConfig

GIB = 2**30
MP79 = 8900 * 8900  # the largest images under the default 80 MP limit


def test_actor_memory_is_the_base_plus_one_largest_image():
    assert actor_memory(MP79) == ACTOR_BASE_BYTES + MP79 * PEAK_BYTES_PER_PIXEL
    assert 2.5 * GIB < actor_memory(MP79) < 3.5 * GIB


def test_given_many_cpus_and_24_gib_when_planned_then_memory_caps_the_actors_and_each_reserves_its_share():
    # given: 16 CPUs and the memory Ray schedules on a 24 GiB machine (about 70 % of it)
    options = BatchConfig()

    # when
    plan = plan_actors(cpus=16, gpus=0, memory=17 * GIB, options=options, max_pixels=MP79)

    # then: 8 actors would need ~22 GiB; only as many as fit in 80 % of 17 GiB run
    assert plan.actors == int(0.8 * 17 * GIB // actor_memory(MP79)) == 4
    assert plan.memory == actor_memory(MP79) and plan.actors * plan.memory <= 0.8 * 17 * GIB
    assert (plan.num_cpus, plan.num_gpus) == (1.0, 0.0)


def test_given_small_images_when_planned_then_cpus_decide():
    plan = plan_actors(cpus=16, gpus=0, memory=17 * GIB, options=BatchConfig(), max_pixels=4_000_000)
    assert plan.actors == 8  # MAX_AUTO_CPU_ACTORS


def test_given_gpus_when_planned_then_one_actor_per_gpu_that_fits_in_memory():
    plan = plan_actors(cpus=32, gpus=4, memory=9 * GIB, options=BatchConfig(), max_pixels=MP79)
    assert (plan.actors, plan.num_gpus) == (2, 1.0)


def test_given_too_many_actors_asked_for_when_planned_then_a_clear_error_names_the_memory():
    with pytest.raises(ValueError, match=r"8 actors x 2\.\d GiB \(images up to 79 MP\) need 2\d\.\d GiB"):
        plan_actors(cpus=16, gpus=0, memory=17 * GIB, options=BatchConfig(concurrency=8), max_pixels=MP79)


def test_given_less_memory_than_one_actor_needs_when_planned_then_one_actor_runs_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.batch_inference"):
        plan = plan_actors(cpus=4, gpus=0, memory=2 * GIB, options=BatchConfig(), max_pixels=MP79)

    assert plan.actors == 1 and plan.memory == int(0.8 * 2 * GIB)
    assert "running one actor" in caplog.text
