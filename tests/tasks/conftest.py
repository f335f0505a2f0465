from tests.tasks.batch_cases import tiny_model_url  # noqa: F401 - a fixture
