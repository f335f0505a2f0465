from tests.pipeline.http_cases import failing_http_server  # noqa: F401 - a fixture
