from tests.pipeline.batch_cases import tiny_model_url  # noqa: F401 - a fixture
from tests.pipeline.http_cases import failing_http_server  # noqa: F401 - a fixture
