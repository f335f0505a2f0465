import dataclasses

import pytest

from ssh_model.settings import Settings


def test_given_ssh_variables_when_read_then_typed_values_override_defaults():
    settings = Settings.from_env({"SSH_DATA_ROOT": "s3://bucket/root", "SSH_CROP_SIZE": "128", "SSH_SEED": "7"})
    assert settings.data_root == "s3://bucket/root"
    assert settings.crop_size == 128 and isinstance(settings.crop_size, int)
    assert settings.seed == 7
    assert settings.lut_size == Settings().lut_size


def test_given_a_malformed_number_when_read_then_the_error_names_the_variable():
    with pytest.raises(ValueError, match="SSH_CROP_SIZE"):
        Settings.from_env({"SSH_CROP_SIZE": "big"})


def test_given_aws_endpoint_only_when_read_then_it_becomes_the_s3_endpoint():
    assert Settings.from_env({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}).s3_endpoint_url == "http://127.0.0.1:9"
    explicit = Settings.from_env({"AWS_ENDPOINT_URL": "http://a", "SSH_S3_ENDPOINT_URL": "http://b"})
    assert explicit.s3_endpoint_url == "http://b"


def test_settings_are_frozen_and_paths_join_under_the_root():
    settings = Settings.from_env({"SSH_DATA_ROOT": "s3://bucket/root/"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.seed = 3  # type: ignore[misc]
    assert settings.path("triplets", "v1") == "s3://bucket/root/triplets/v1"
