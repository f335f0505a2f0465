"""The cluster configs of infra/ parse and agree with the project: the locked Ray and Python, GPUs on the
worker groups, the ports, environment variables named as the code reads them, no literal secrets."""

import json
import re
import tomllib
from dataclasses import fields
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from prefect.server.schemas.actions import validate_base_job_template
from prefect.utilities.templating import apply_values, find_placeholders

from pipeline.ray_runtime import FORWARDED_ENV_NAMES
from ssh_model.settings import Settings

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
CODE = [REPO / "ssh_model", REPO / "pipeline", REPO / "tasks", REPO / "flows"]
# Read by the libraries rather than by our code: boto3/s3fs (keys), Prefect (its API).
LIBRARY_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PREFECT_API_URL"}
SECRET_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}


def locked(package: str) -> str:
    found = re.search(rf"^{re.escape(package)}==(\S+)$", (REPO / "requirements.lock").read_text(), re.MULTILINE)
    return found.group(1)


RAY = locked("ray")
PYTHON = "py311"
RAY_IMAGE = f"rayproject/ray:{RAY}-{PYTHON}-gpu"
PROJECT_IMAGE_TAG = f"ray{RAY}-{PYTHON}-gpu"  # infra/docker/Dockerfile, built on RAY_IMAGE


def load_yaml(name: str) -> dict:
    return yaml.safe_load((INFRA / name).read_text())


def load_json(name: str) -> dict:
    return json.loads((INFRA / name).read_text())


def code_env_names() -> set[str]:
    """The environment variables our code reads (or sets for MLflow), found in its source."""
    pattern = re.compile(r"""(?:environ|env)(?:\.get|\.setdefault)?[(\[]\s*["']([A-Z][A-Z0-9_]+)["']""")
    names = {name for folder in CODE for path in folder.rglob("*.py") for name in pattern.findall(path.read_text())}
    return names | {f"SSH_{spec.name.upper()}" for spec in fields(Settings)} | set(FORWARDED_ENV_NAMES)


def rendered(template: dict, **values: object) -> dict:
    """The job configuration a worker gets: variable defaults (and ``values``) applied, ``env`` merged as
    Prefect merges it (``BaseJobConfiguration.from_template_and_values``)."""
    properties = template["variables"]["properties"]
    variables = {name: spec["default"] for name, spec in properties.items() if "default" in spec} | values
    configuration = apply_values(template["job_configuration"], variables)
    configuration["env"] = configuration["env"] | variables.get("env", {})
    return configuration


def k8s_env(container: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def test_the_python_tag_is_the_projects_python():
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert ">=3.11" in requires and "<3.12" in requires
    assert ray.__version__ == RAY


def test_given_the_ray_cluster_launcher_config_then_it_is_valid_and_runs_the_locked_ray_on_gpu_workers():
    config = load_yaml("ray/cluster.yaml")
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)

    assert config["docker"]["image"] == RAY_IMAGE
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    workers = {name: spec for name, spec in types.items() if name != config["head_node_type"]}
    assert workers and all(spec["resources"].get("GPU", 0) >= 1 for spec in workers.values())
    assert all(0 <= spec["min_workers"] <= spec["max_workers"] <= config["max_workers"] for spec in workers.values())
    assert "GPU" not in types[config["head_node_type"]]["resources"]

    assert "." in config["file_mounts"].values()  # the checkout goes to every node
    assert any("pip install" in c and "-c requirements.lock ." in c for c in config["setup_commands"])
    head = " ".join(config["head_start_ray_commands"])
    for option in (
        "--head",
        "--port=6379",
        "--dashboard-port=8265",
        "--ray-client-server-port=10001",
        "--dashboard-host=0.0.0.0",
    ):
        assert option in head
    assert "--address=$RAY_HEAD_IP:6379" in " ".join(config["worker_start_ray_commands"])


def test_given_the_kuberay_cluster_then_it_runs_the_locked_ray_with_gpu_workers_and_storage_from_a_secret():
    cluster = load_yaml("ray/raycluster.yaml")
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    assert cluster["spec"]["rayVersion"] == RAY

    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {port["name"]: port["containerPort"] for port in head["ports"]} == {
        "gcs": 6379,
        "dashboard": 8265,
        "client": 10001,
    }
    assert head["resources"]["requests"] and head["resources"]["limits"]

    groups = cluster["spec"]["workerGroupSpecs"]
    assert groups
    for group in groups:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        for container in group["template"]["spec"]["containers"]:
            assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
            assert k8s_env(container) == k8s_env(head)  # the same storage settings everywhere

    pods = [cluster["spec"]["headGroupSpec"], *groups]
    images = [c["image"] for spec in pods for c in spec["template"]["spec"]["containers"]]
    assert images and all(image.endswith(f":{PROJECT_IMAGE_TAG}") for image in images)
    dockerfile = (INFRA / "docker" / "Dockerfile").read_text()
    assert re.search(rf"^FROM {re.escape(RAY_IMAGE)}$", dockerfile, re.MULTILINE)
    assert "pip install --no-cache-dir -c requirements.lock ." in dockerfile

    env = k8s_env(head)
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env)
    assert all("value" not in entry and entry["valueFrom"]["secretKeyRef"]["name"] for entry in env.values())


def valid_pool_template(name: str) -> dict:
    """A work-pool base job template that Prefect accepts, every placeholder of it defined as a variable."""
    template = load_json(name)
    validate_base_job_template(template)
    used = {p.name for p in find_placeholders(json.dumps(template["job_configuration"]))}
    assert used <= set(template["variables"]["properties"])
    return template


def test_given_the_process_pool_template_then_prefect_accepts_it_and_flow_runs_join_the_local_ray_cluster():
    template = valid_pool_template("prefect/process-pool.json")

    configuration = rendered(template)
    assert configuration["env"]["RAY_ADDRESS"] == "auto"
    assert configuration["working_dir"] == "/home/ray/ssh-harmonization"  # where cluster.yaml syncs the checkout
    assert "~/ssh-harmonization" in load_yaml("ray/cluster.yaml")["file_mounts"]
    assert rendered(template, env={"EXTRA": "1"})["env"] == {"RAY_ADDRESS": "auto", "EXTRA": "1"}


def test_given_the_kubernetes_pool_template_then_pods_reach_the_ray_head_prefect_mlflow_and_storage():
    template = valid_pool_template("prefect/kubernetes-pool.json")

    configuration = rendered(template)
    cluster = load_yaml("ray/raycluster.yaml")
    head_service = f"{cluster['metadata']['name']}-head-svc"
    assert re.fullmatch(rf"ray://{head_service}(\.[a-z0-9-]+)*:10001", configuration["env"]["RAY_ADDRESS"])
    assert configuration["env"]["PREFECT_API_URL"].endswith("/api")
    assert configuration["env"]["MLFLOW_TRACKING_URI"].startswith("http")

    manifest = configuration["job_manifest"]
    assert manifest["kind"] == "Job" and manifest["metadata"]["namespace"] == configuration["namespace"]
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    assert container["name"] == "prefect-job"  # the name Prefect's Kubernetes worker requires
    assert container["image"].endswith(f":{PROJECT_IMAGE_TAG}")
    env = k8s_env(container)
    ray_env = k8s_env(cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0])
    assert env == ray_env  # the same Secret, keys and names as the Ray pods


def config_files() -> list[Path]:
    return sorted(p for folder in ("ray", "prefect", "docker") for p in (INFRA / folder).iterdir() if p.is_file())


def env_entries(value: object) -> list[tuple[str, object]]:
    """(name, entry) of every environment variable a config sets: Kubernetes ``env`` lists and ``env`` dicts."""
    found: list[tuple[str, object]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "env" and isinstance(item, list):
                found += [(entry["name"], entry) for entry in item]
            elif key == "env" and isinstance(item, dict):
                found += [(name, entry) for name, entry in item.items() if not isinstance(entry, dict)]
            found += env_entries(item)
    elif isinstance(value, list):
        for item in value:
            found += env_entries(item)
    return found


def parsed_configs() -> list[tuple[str, object]]:
    """Each config's part that sets environments (a template's variables schema describes, it sets nothing)."""
    return [
        ("ray/cluster.yaml", load_yaml("ray/cluster.yaml")),
        ("ray/raycluster.yaml", load_yaml("ray/raycluster.yaml")),
        ("prefect/process-pool.json", load_json("prefect/process-pool.json")["job_configuration"]),
        ("prefect/kubernetes-pool.json", load_json("prefect/kubernetes-pool.json")["job_configuration"]),
    ]


@pytest.mark.parametrize("path", config_files(), ids=lambda p: p.name)
def test_no_config_holds_a_literal_secret(path):
    text = path.read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)  # an AWS access key id
    assert not re.search(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])", text)  # an AWS secret key
    assert not re.search(r"(?i)(secret|password|token)[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+=]{12,}", text)


def test_secret_variables_only_come_from_kubernetes_secrets():
    for name, config in parsed_configs():
        for variable, entry in env_entries(config):
            if variable in SECRET_ENV:
                assert isinstance(entry, dict) and "secretKeyRef" in entry.get("valueFrom", {}), (name, variable)


def test_every_environment_variable_a_config_sets_is_one_the_code_or_its_libraries_read():
    known = code_env_names()
    assert {
        "RAY_ADDRESS",
        "MLFLOW_TRACKING_URI",
        "AWS_ENDPOINT_URL",
        "SSH_S3_ENDPOINT_URL",
        "MLFLOW_S3_ENDPOINT_URL",
    } <= known  # the names the configs rely on are still read
    for name, config in parsed_configs():
        unknown = {variable for variable, _ in env_entries(config)} - known - LIBRARY_ENV
        assert not unknown, f"{name} sets variables nothing reads: {sorted(unknown)}"
