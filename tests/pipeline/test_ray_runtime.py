"""What Ray workers are given of the driver's environment."""

from unittest.mock import patch  # of os.environ only

from pipeline.ray_runtime import forwarded_env


def test_given_project_and_openssh_variables_then_only_the_project_settings_and_s3_endpoint_are_forwarded():
    environment = {
        "SSH_DATA_ROOT": "s3://lake",
        "SSH_MAX_IMAGE_PIXELS": "1000",
        "AWS_ENDPOINT_URL": "http://s3",
        "SSH_AUTH_SOCK": "/tmp/agent.sock",
        "SSH_CONNECTION": "10.0.0.1 22 10.0.0.2 22",
        "AWS_SECRET_ACCESS_KEY": "secret",
    }

    with patch.dict("os.environ", environment):
        forwarded = forwarded_env()

    assert {k: forwarded.get(k) for k in environment} == {
        "SSH_DATA_ROOT": "s3://lake",
        "SSH_MAX_IMAGE_PIXELS": "1000",
        "AWS_ENDPOINT_URL": "http://s3",
        "SSH_AUTH_SOCK": None,
        "SSH_CONNECTION": None,
        "AWS_SECRET_ACCESS_KEY": None,
    }
