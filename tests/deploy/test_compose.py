"""docker-compose.yaml: valid against the Compose specification, wired together, pinned and free of secrets.

There is no Docker engine here, so the file is checked the way `docker compose config` would see it: interpolated
with the settings of docker/.env.example, then validated against the Compose JSON schema that check-jsonschema
vendors, then its wiring is checked service by service.
"""

from __future__ import annotations

import configparser
import copy
import importlib.util
import json
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from continuous_training.config import PROJECT_ROOT
from jsonschema import Draft202012Validator

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = PROJECT_ROOT / "docker" / ".env.example"
DOCKERFILE = PROJECT_ROOT / "docker" / "Dockerfile"
DOCKER_REQUIREMENTS = PROJECT_ROOT / "docker" / "requirements-docker.txt"
MLFLOW_DB_SCRIPT = PROJECT_ROOT / "docker" / "postgres" / "create-mlflow-db.sh"
IMAGE_PROJECT_ROOT = "/opt/project"  # WORKDIR of docker/Dockerfile, where `COPY . .` puts the repository
AIRFLOW_COMPONENTS = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"}
SPARK_WORKERS = {"spark-worker-1", "spark-worker-2"}
SECRET_WORDS = ("PASSWORD", "SECRET", "KEY")
# $$, ${VAR}, ${VAR:-default}, ${VAR:?message}; a `$` that starts none of them is a form this file must not use.
INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<operator>:-|:\?)(?P<argument>[^}]*))?\}|)"
)
REQUIRED_SECRET = re.compile(r"\$\{(?P<name>\w+):\?[^}]+\}")


class MissingVariable(ValueError):
    """A `${VAR:?message}` whose variable is unset or empty: docker compose refuses the file."""


def interpolate_text(text: str, values: Mapping[str, str]) -> str:
    """Resolve the interpolation forms docker compose resolves in one string value."""

    def resolve(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["name"]
        if name is None:
            raise ValueError(f"unsupported interpolation in {text!r}")
        value = values.get(name, "")
        if match["operator"] == ":-":
            return value or match["argument"]
        if match["operator"] == ":?" and not value:
            raise MissingVariable(f"{name}: {match['argument']}")
        return value

    return INTERPOLATION.sub(resolve, text)


def interpolate(node: Any, values: Mapping[str, str]) -> Any:
    """The parsed compose file with every string value interpolated."""
    if isinstance(node, dict):
        return {key: interpolate(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, values) for item in node]
    return interpolate_text(node, values) if isinstance(node, str) else node


def strings_in(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from strings_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings_in(item)
    elif isinstance(node, str):
        yield node


def variables_in(node: Any) -> dict[str, set[str]]:
    """Each variable the file reads, with the operators it is read with ('' for plain ${VAR})."""
    found: dict[str, set[str]] = {}
    for text in strings_in(node):
        for match in INTERPOLATION.finditer(text):
            if match["name"]:
                found.setdefault(match["name"], set()).add(match["operator"] or "")
    return found


def read_env_example() -> dict[str, dict[str, str]]:
    """The variables of docker/.env.example by section ('required', 'optional'), each with its value."""
    sections: dict[str, dict[str, str]] = {}
    section = None
    for line in ENV_EXAMPLE.read_text().splitlines():
        if heading := re.fullmatch(r"# --- (\w+).* ---", line):
            section = sections.setdefault(heading.group(1).lower(), {})
        elif line and not line.startswith("#"):
            name, _, value = line.partition("=")
            assert section is not None, f"{name} comes before the Required / Optional headings"
            section[name] = value
    return sections


def filled_settings() -> dict[str, str]:
    """docker/.env.example with a value in each empty required setting, as a user's docker/.env has."""
    sections = read_env_example()
    required = {name: value or f"test-value-of-{name.lower()}" for name, value in sections["required"].items()}
    return {**sections["optional"], **required}


def env_of(service: dict) -> dict[str, str]:
    return {key: str(value) for key, value in service.get("environment", {}).items()}


def command_of(service: dict) -> list[str]:
    command = service.get("command", [])
    return command if isinstance(command, list) else command.split()


def health_url(service: dict) -> str:
    """The URL a project-image service's Python health check opens."""
    return re.search(r"urlopen\('([^']+)'", " ".join(service["healthcheck"]["test"])).group(1)


def published_ports(service: dict) -> dict[int, tuple[str, int]]:
    """Container port -> (host IP, host port) for each `IP:HOST:CONTAINER` entry."""
    ports = {}
    for entry in service.get("ports", []):
        match = re.fullmatch(r"(?P<ip>[\d.]+):(?P<host>\d+):(?P<container>\d+)", str(entry))
        assert match, f"{entry!r} does not name the host IP"
        ports[int(match["container"])] = (match["ip"], int(match["host"]))
    return ports


def named_volume_mounts(service: dict) -> list[tuple[str, str]]:
    mounts = [str(volume).split(":")[:2] for volume in service.get("volumes", [])]
    return [(source, target) for source, target in mounts if not source.startswith((".", "/"))]


@pytest.fixture(scope="module")
def raw() -> dict:
    """docker-compose.yaml as written (anchors merged, nothing interpolated)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose(raw: dict) -> dict:
    """docker-compose.yaml as docker compose resolves it with a filled-in docker/.env."""
    return interpolate(raw, filled_settings())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


@pytest.fixture(scope="module")
def compose_schema() -> dict:
    """The Compose specification's JSON schema as check-jsonschema vendors it."""
    package = Path(importlib.util.find_spec("check_jsonschema").origin).parent
    return json.loads((package / "builtin_schemas" / "vendor" / "compose-spec.json").read_text())


@pytest.fixture(scope="module")
def compose_validator(compose_schema: dict) -> Draft202012Validator:
    """A validator for the draft the schema declares, 2020-12: its unevaluatedProperties reject unknown keys."""
    assert compose_schema["$schema"] == Draft202012Validator.META_SCHEMA["$id"]
    Draft202012Validator.check_schema(compose_schema)
    return Draft202012Validator(compose_schema)


@pytest.fixture(scope="module")
def mlflow_server_options(services: dict) -> dict[str, Any]:
    """The mlflow service's command and environment, parsed by the installed `mlflow server` CLI."""
    from mlflow.cli import server

    command = command_of(services["mlflow"])
    assert command[:2] == ["mlflow", "server"]
    with pytest.MonkeyPatch.context() as patch:
        for option in server.params:
            if option.envvar:
                patch.delenv(option.envvar, raising=False)
        for name, value in env_of(services["mlflow"]).items():
            patch.setenv(name, value)
        return server.make_context("mlflow server", command[2:]).params


def test_the_stack_has_every_service(services: dict) -> None:
    assert set(services) == {
        "postgres", "minio", "minio-init", "mlflow", "spark-master", *SPARK_WORKERS, "airflow-init",
        *AIRFLOW_COMPONENTS,
    }


def test_every_variable_is_documented_in_env_example(raw: dict) -> None:
    used = variables_in(raw)
    sections = read_env_example()
    assert set(sections) == {"required", "optional"}
    assert all(len(operators) == 1 for operators in used.values()), used
    required = {name for name, operators in used.items() if operators == {":?"}}
    with_default = {name for name, operators in used.items() if operators == {":-"}}
    assert required | with_default == set(used), "every variable is required (:?) or has a default (:-)"
    assert set(sections["required"]) == required
    assert set(sections["optional"]) == with_default
    for text in strings_in(raw):
        for match in INTERPOLATION.finditer(text):
            if match["operator"] == ":-":
                assert sections["optional"][match["name"]] == match["argument"], f"default of {match['name']}"


def test_compose_refuses_to_start_until_the_secrets_are_set(raw: dict) -> None:
    sections = read_env_example()
    secrets = [name for name in sections["required"] if any(word in name for word in SECRET_WORDS)]
    assert secrets
    for name in secrets:
        assert sections["required"][name] == "", f"{name} has a value in .env.example"
    with pytest.raises(MissingVariable, match="see docker/.env.example"):
        interpolate(raw, {**sections["optional"], **sections["required"]})


def test_compose_file_is_valid_against_the_compose_specification(
        compose: dict, compose_validator: Draft202012Validator) -> None:
    errors = [f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
              for error in compose_validator.iter_errors(compose)]
    assert errors == []


def misspell_healthcheck(compose: dict) -> None:
    compose["services"]["postgres"]["healtcheck"] = compose["services"]["postgres"].pop("healthcheck")


def unknown_depends_on_condition(compose: dict) -> None:
    compose["services"]["mlflow"]["depends_on"]["postgres"]["condition"] = "service_ready"


def unquoted_restart_no(compose: dict) -> None:
    compose["services"]["airflow-init"]["restart"] = False  # what YAML makes of `restart: no`


@pytest.mark.parametrize("break_file", [misspell_healthcheck, unknown_depends_on_condition, unquoted_restart_no])
def test_the_schema_rejects_a_broken_file(compose: dict, compose_validator: Draft202012Validator,
                                          break_file: Callable[[dict], None]) -> None:
    broken = copy.deepcopy(compose)
    break_file(broken)
    assert list(compose_validator.iter_errors(broken))


def test_dependencies_exist_and_wait_for_what_their_target_reports(services: dict) -> None:
    for name, service in services.items():
        for target, dependency in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            condition = dependency["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target} to be healthy"
            else:
                assert condition == "service_completed_successfully", f"{name} -> {target}: {condition}"
                assert services[target]["restart"] == "no", f"{name} waits for {target} to exit"


def test_long_running_services_have_health_checks(services: dict) -> None:
    for name, service in services.items():
        if service["restart"] != "no":
            assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name


def test_ports_are_published_on_loopback_only(services: dict) -> None:
    published = {name: published_ports(service) for name, service in services.items()}
    host_ports = [host for ports in published.values() for _, host in ports.values()]
    assert len(host_ports) == len(set(host_ports))
    assert {ip for ports in published.values() for ip, _ in ports.values()} == {"127.0.0.1"}
    assert published["airflow-apiserver"][8080] == ("127.0.0.1", 8080)
    assert published["mlflow"][5000] == ("127.0.0.1", 5000)
    assert published["spark-master"][8080] == ("127.0.0.1", 8081)


def test_volumes_are_declared_and_bind_mounts_exist(compose: dict, services: dict) -> None:
    used = {source for service in services.values() for source, _ in named_volume_mounts(service)}
    assert used == set(compose["volumes"])
    for service in services.values():
        for volume in service.get("volumes", []):
            if volume.startswith("."):
                assert (PROJECT_ROOT / volume.split(":")[0]).is_file(), volume


def test_project_services_share_the_built_image_and_the_data_volume(services: dict) -> None:
    project = {name: service for name, service in services.items() if "build" in service}
    assert set(project) == {"mlflow", "spark-master", *SPARK_WORKERS, "airflow-init", *AIRFLOW_COMPONENTS}
    assert {json.dumps(service["build"], sort_keys=True) for service in project.values()} == {
        json.dumps({"context": ".", "dockerfile": "docker/Dockerfile"}, sort_keys=True)}
    assert len({service["image"] for service in project.values()}) == 1
    for name, service in project.items():
        assert ("data", "/data") in named_volume_mounts(service), name
        assert env_of(service)["DATA_DIR"] == "/data", name


def test_other_images_are_pinned(services: dict) -> None:
    for name, service in services.items():
        if "build" not in service:
            tag = service["image"].rpartition(":")[2]
            assert re.fullmatch(r"\d+\.\d+[\w.-]*|RELEASE\.[\dT-]+Z", tag), f"{name}: {service['image']}"


def test_spark_workers_and_airflow_use_the_spark_master(services: dict) -> None:
    master = command_of(services["spark-master"])
    assert master[:2] == ["spark-class", "org.apache.spark.deploy.master.Master"]
    host, port = master[master.index("--host") + 1], int(master[master.index("--port") + 1])
    assert host in services
    master_url = f"spark://{host}:{port}"
    for worker in SPARK_WORKERS:
        command = command_of(services[worker])
        assert command[:3] == ["spark-class", "org.apache.spark.deploy.worker.Worker", master_url], worker
        assert services[worker]["depends_on"]["spark-master"]["condition"] == "service_healthy"
    for component in AIRFLOW_COMPONENTS | {"airflow-init"}:
        connection = json.loads(env_of(services[component])["AIRFLOW_CONN_SPARK_DEFAULT"])
        assert connection["conn_type"] == "spark"
        assert f"{connection['host']}:{connection['port']}" == master_url, component


def test_project_services_track_to_the_mlflow_server(services: dict, mlflow_server_options: dict) -> None:
    tracking_uris = {env_of(service)["MLFLOW_TRACKING_URI"] for service in services.values() if "build" in service}
    assert tracking_uris == {f"http://mlflow:{mlflow_server_options['port']}"}
    ui_url = urlsplit(env_of(services["airflow-apiserver"])["MLFLOW_UI_URL"])
    assert (ui_url.hostname, ui_url.port) == published_ports(services["mlflow"])[mlflow_server_options["port"]]


def test_mlflow_allows_the_hosts_its_clients_name(services: dict, mlflow_server_options: dict) -> None:
    allowed = set(mlflow_server_options["allowed_hosts"].split(","))
    clients = {
        urlsplit(env_of(services["airflow-scheduler"])["MLFLOW_TRACKING_URI"]).netloc,
        urlsplit(env_of(services["airflow-apiserver"])["MLFLOW_UI_URL"]).netloc,
        urlsplit(health_url(services["mlflow"])).netloc,
    }
    assert clients == {"mlflow:5000", "127.0.0.1:5000", "localhost:5000"}
    assert clients <= allowed


def test_mlflow_keeps_runs_in_postgres_and_artifacts_in_the_minio_bucket(
        services: dict, mlflow_server_options: dict) -> None:
    backend = urlsplit(mlflow_server_options["backend_store_uri"])
    assert backend.scheme == "postgresql+psycopg2" and backend.hostname == "postgres"

    assert mlflow_server_options["serve_artifacts"] is True
    destination = urlsplit(mlflow_server_options["artifacts_destination"])
    assert destination.scheme == "s3"
    mlflow_env, minio_env = env_of(services["mlflow"]), env_of(services["minio"])
    endpoint = urlsplit(mlflow_env["MLFLOW_S3_ENDPOINT_URL"])
    assert endpoint.hostname == "minio" and "--address" not in command_of(services["minio"]) and endpoint.port == 9000
    assert (mlflow_env["AWS_ACCESS_KEY_ID"], mlflow_env["AWS_SECRET_ACCESS_KEY"]) == (
        minio_env["MINIO_ROOT_USER"], minio_env["MINIO_ROOT_PASSWORD"])

    script = services["minio-init"]["command"][0]
    alias = re.search(r"mc alias set (\S+) (\S+) ", script)
    assert alias and alias.group(2) == mlflow_env["MLFLOW_S3_ENDPOINT_URL"]
    assert f"mc mb --ignore-existing {alias.group(1)}/{destination.hostname}\n" in script
    assert services["mlflow"]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"


def test_mlflow_has_its_own_database_role_not_the_owner_of_airflows(
        services: dict, mlflow_server_options: dict) -> None:
    backend = urlsplit(mlflow_server_options["backend_store_uri"])
    airflow = urlsplit(env_of(services["airflow-init"])["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    postgres = env_of(services["postgres"])
    assert backend.username == "mlflow" and airflow.username == postgres["POSTGRES_USER"] != backend.username
    assert backend.password == postgres["MLFLOW_DB_PASSWORD"] != postgres["POSTGRES_PASSWORD"]
    script = MLFLOW_DB_SCRIPT.read_text()
    assert f"/docker-entrypoint-initdb.d/{MLFLOW_DB_SCRIPT.name}:ro" in " ".join(services["postgres"]["volumes"])
    assert '-v password="$MLFLOW_DB_PASSWORD"' in script
    assert f"CREATE ROLE {backend.username} LOGIN PASSWORD :'password';" in script
    assert f"CREATE DATABASE {backend.path.strip('/')} OWNER {backend.username};" in script
    assert 'REVOKE ALL ON DATABASE :"airflow_db" FROM PUBLIC;' in script and '-v airflow_db="$POSTGRES_DB"' in script
    assert postgres["POSTGRES_DB"] == airflow.path.strip("/")


def test_mlflow_requires_a_login_which_the_project_services_use(services: dict,
                                                                 mlflow_server_options: dict) -> None:
    assert mlflow_server_options["app_name"] == "basic-auth"
    assert importlib.util.find_spec("flask_wtf"), "the basic-auth app needs Flask-WTF (requirements.txt)"
    mlflow_env = env_of(services["mlflow"])
    config = configparser.ConfigParser()
    assert config.read(PROJECT_ROOT / mlflow_env["MLFLOW_AUTH_CONFIG_PATH"].removeprefix(f"{IMAGE_PROJECT_ROOT}/"))
    assert config["mlflow"]["default_permission"] == "NO_PERMISSIONS"
    users = Path(config["mlflow"]["database_uri"].removeprefix("sqlite:///"))
    [volume] = [source for source, target in named_volume_mounts(services["mlflow"]) if target == str(users.parent)]
    assert f"chown -R app /data /opt/airflow /opt/spark {users.parent}" in DOCKERFILE.read_text(), volume
    assert mlflow_env["MLFLOW_FLASK_SERVER_SECRET_KEY"] and mlflow_env["MLFLOW_AUTH_ADMIN_PASSWORD"]
    for name, service in services.items():
        if "build" in service:
            login = env_of(service)["MLFLOW_TRACKING_USERNAME"], env_of(service)["MLFLOW_TRACKING_PASSWORD"]
            assert login == (mlflow_env["MLFLOW_AUTH_ADMIN_USERNAME"], mlflow_env["MLFLOW_AUTH_ADMIN_PASSWORD"]), name


def test_no_project_service_unpickles_a_model(services: dict) -> None:
    for name, service in services.items():
        if "build" in service:
            assert env_of(service)["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false", name


def test_airflow_init_writes_the_admin_password_privately_before_the_api_server_would_print_one(
        services: dict) -> None:
    script = command_of(services["airflow-init"])[-1]
    assert "umask 077" in script and "/opt/airflow/simple_auth_manager_passwords.json.generated" in script
    assert script.index("simple_auth_manager_passwords") < script.index("airflow db migrate")
    assert "print(" not in script.replace("print(json.dumps(", "")


def test_airflow_components_share_their_settings(services: dict) -> None:
    config = Path(importlib.util.find_spec("airflow").origin).parent / "config_templates" / "config.yml"
    options = {(section, option) for section, body in yaml.safe_load(config.read_text()).items()
               for option in body.get("options", {})}
    shared = env_of(services["airflow-init"])
    for component in AIRFLOW_COMPONENTS:
        environment = env_of(services[component])
        assert {key: environment[key] for key in shared} == shared, component
        assert environment["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        for key in environment:
            if key.startswith("AIRFLOW__"):
                section, option = key.removeprefix("AIRFLOW__").lower().split("__")
                assert (section, option) in options, f"{key} is no Airflow setting"
    assert shared["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    database = urlsplit(shared["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert (database.hostname, database.path) == ("postgres", "/airflow")
    assert command_of(services["airflow-apiserver"]) == ["airflow", "api-server"]


def test_airflow_init_migrates_and_creates_the_registry_pool(services: dict) -> None:
    from continuous_training.orchestration.tasks import REGISTRY_POOL

    script = command_of(services["airflow-init"])[-1]
    assert "airflow db migrate\n" in script
    assert f"airflow pools set {REGISTRY_POOL} 1 " in script
    for component in AIRFLOW_COMPONENTS:
        assert services[component]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_no_secret_is_written_in_the_file(raw: dict) -> None:
    required = read_env_example()["required"]
    for name, service in raw["services"].items():
        for key, value in env_of(service).items():
            if any(word in key for word in SECRET_WORDS):
                match = REQUIRED_SECRET.fullmatch(value)
                assert match and match["name"] in required, f"{name}: {key}"
    credentials = [text for text in strings_in(raw) if re.search(r"://[^@]*@", text)]
    assert credentials
    for text in credentials:
        assert re.search(rf"://\w+:{REQUIRED_SECRET.pattern}@", text), text


@pytest.fixture
def tools_without_nvidia_smi(tmp_path: Path) -> Path:
    """A PATH folder with the tools the discovery script uses and no nvidia-smi, whatever the host has."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in ("tr", "sed", "paste"):
        (folder / tool).symlink_to(shutil.which(tool))
    return folder


def discover(path: Path, **env: str) -> dict:
    script = PROJECT_ROOT / "docker" / "spark" / "gpu-discovery.sh"
    output = subprocess.run([str(script)], env={"PATH": str(path), **env}, capture_output=True, text=True,
                            check=True, timeout=30).stdout
    return json.loads(output)


def test_gpu_discovery_script_is_the_one_workers_run(services: dict) -> None:
    for worker in SPARK_WORKERS:
        options = dict(option.removeprefix("-D").split("=", 1)
                       for option in env_of(services[worker])["SPARK_WORKER_OPTS"].split())
        assert options["spark.worker.resource.gpu.amount"] == "0"  # a worker offering GPUs it lacks does not start
        script = options["spark.worker.resource.gpu.discoveryScript"]
        assert script.startswith(f"{IMAGE_PROJECT_ROOT}/"), script
        local = PROJECT_ROOT / script.removeprefix(f"{IMAGE_PROJECT_ROOT}/")
        assert local.is_file() and local.stat().st_mode & stat.S_IXUSR, local
        assert "SPARK_FAKE_GPU_ADDRESSES" in env_of(services[worker])


@pytest.mark.parametrize(("fake_addresses", "expected"), [("0,1", ["0", "1"]), ("", [])])
def test_gpu_discovery_reports_fake_addresses_without_nvidia_smi(
        tools_without_nvidia_smi: Path, fake_addresses: str, expected: list[str]) -> None:
    assert discover(tools_without_nvidia_smi, SPARK_FAKE_GPU_ADDRESSES=fake_addresses) == {
        "name": "gpu", "addresses": expected}


def test_gpu_discovery_prefers_the_gpus_nvidia_smi_lists(tools_without_nvidia_smi: Path) -> None:
    nvidia_smi = tools_without_nvidia_smi / "nvidia-smi"
    nvidia_smi.write_text('#!/bin/sh\n[ "$*" = "--query-gpu=index --format=csv,noheader" ] && printf "0\\n1\\n2\\n"\n')
    nvidia_smi.chmod(0o755)
    assert discover(tools_without_nvidia_smi, SPARK_FAKE_GPU_ADDRESSES="5") == {
        "name": "gpu", "addresses": ["0", "1", "2"]}


def test_dockerfile_builds_the_project_image_with_pinned_requirements() -> None:
    dockerfile = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    for needed in ("openjdk-17-jre-headless", "-r /tmp/requirements/requirements.txt",
                   "-r /tmp/requirements/requirements-docker.txt", "scripts/install_horovod.sh", "COPY . .", "-e ."):
        assert needed in dockerfile, needed
    assert f"WORKDIR {IMAGE_PROJECT_ROOT}\n" in dockerfile
    pins = [line for line in DOCKER_REQUIREMENTS.read_text().splitlines() if line and not line.startswith("#")]
    assert all(re.fullmatch(r"[\w.-]+==[\w.]+", line) for line in pins), pins
    assert "boto3" in {line.split("==")[0] for line in pins}
    assert "psycopg2-binary" in (PROJECT_ROOT / "requirements.txt").read_text(), "the Postgres driver, natively too"
    ignored = (PROJECT_ROOT / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
    assert [line for line in ignored if line.startswith("docker")] == ["docker/.env"]  # the rest reaches the image


def test_the_gpu_image_adds_cuda_torch_and_horovod_with_nccl_to_the_project_image(services: dict) -> None:
    dockerfile = (PROJECT_ROOT / "docker" / "Dockerfile.gpu").read_text()
    base = re.search(r"^ARG BASE=(\S+)$", dockerfile, re.M)
    assert base and base.group(1) == services["spark-worker-1"]["image"] and "FROM ${BASE}" in dockerfile
    assert "GPU=1 bash scripts/install_horovod.sh" in dockerfile and "cuda-nvcc-" in dockerfile
    torch_pin = re.search(r"torch_version=\$\((sed .*)\) \\$", dockerfile, re.M).group(1)
    found = subprocess.run(torch_pin, shell=True, cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "2.13.0", "the GPU image installs the pinned torch version"
    assert "docker/Dockerfile.gpu" in (PROJECT_ROOT / "docker-compose.yaml").read_text()


def test_the_gpu_horovod_build_says_what_it_needs(tmp_path: Path) -> None:
    venv_bin = Path(sys.executable).parent
    path = f"{venv_bin}:/usr/bin:/bin"  # the project's CPU venv, no CUDA toolkit
    result = subprocess.run(["bash", "scripts/install_horovod.sh", str(venv_bin.parent)], cwd=PROJECT_ROOT,
                            env={"PATH": path, "GPU": "1", "HOME": str(tmp_path)}, capture_output=True, text=True)
    assert result.returncode == 1 and "GPU=1 needs nvcc (the CUDA toolkit) on PATH" in result.stderr
