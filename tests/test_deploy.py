"""The production pieces under deploy/: what can run here runs; the rest is checked for agreement
with the project (the image and the Helm values cannot be built or installed here)."""

import importlib.util
import os
import re
import subprocess

import dagster as dg
import duckdb
import pytest
import yaml
from dagster._core.instance.config import PoolGranularity
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_postgres import PostgresRunStorage

from harness import (
    DEPLOY_INSTANCE_CONFIG,
    REPO_ROOT,
    copy_dbt_project,
    load_noxfile,
    supported_pythons,
)

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()
HELM_VALUES = yaml.safe_load((REPO_ROOT / "deploy" / "helm" / "values.yaml").read_text())
LOCAL_INSTANCE_CONFIG = yaml.safe_load((REPO_ROOT / "dagster_home" / "dagster.yaml").read_text())
PROFILES = (REPO_ROOT / "analytics_dbt" / "profiles.yml").read_text()
COMPOSE = REPO_ROOT / "deploy" / "compose"


def dbt(project_dir, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["dbt", *args, "--project-dir", project_dir, "--profiles-dir", project_dir],
        cwd=project_dir,
        env={**{k: v for k, v in os.environ.items() if k != "DBT_DUCKDB_PATH"}, **env},
        capture_output=True,
        text=True,
    )


def test_prod_target_builds_in_the_database_named_by_the_environment(tmp_path):
    project_dir = copy_dbt_project(tmp_path / "analytics_dbt")
    shared = tmp_path / "shared-volume" / "analytics.duckdb"
    shared.parent.mkdir()
    built = dbt(
        project_dir,
        "build",
        "--select",
        "raw_customers",
        "stg_customers",
        "--indirect-selection",
        "buildable",
        DBT_TARGET="prod",
        DBT_DUCKDB_PATH=str(shared),
    )
    assert built.returncode == 0, built.stdout
    with duckdb.connect(str(shared), read_only=True) as con:
        assert con.execute("select count(*) from stg_customers").fetchone() == (100,)
    assert not (project_dir / "data" / "analytics.duckdb").exists()


def test_prod_target_without_a_database_fails_naming_the_variable(tmp_path):
    project_dir = copy_dbt_project(tmp_path / "analytics_dbt")
    parsed = dbt(project_dir, "parse", DBT_TARGET="prod")
    assert parsed.returncode != 0
    assert "DBT_DUCKDB_PATH" in parsed.stdout + parsed.stderr


def test_deploy_instance_config_is_postgres_with_a_run_queue_and_the_local_pool_rules(
    tmp_path, postgres_url, monkeypatch
):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DEPLOY_INSTANCE_CONFIG.read_text())
    monkeypatch.setenv("DAGSTER_PG_URL", postgres_url)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        pools = instance.get_concurrency_config().pool_config
        # A worker pod that dies is noticed (the code server does not host it), and its run
        # marked FAILURE, which frees the pool.
        assert instance.run_monitoring_enabled
    assert (
        pools.default_pool_limit == LOCAL_INSTANCE_CONFIG["concurrency"]["pools"]["default_limit"]
    )
    assert pools.default_pool_limit == 1
    assert pools.pool_granularity == PoolGranularity.RUN
    assert LOCAL_INSTANCE_CONFIG["concurrency"]["pools"]["granularity"] == "run"
    # The connection, password included, comes only from the environment.
    config = yaml.safe_load(DEPLOY_INSTANCE_CONFIG.read_text())
    assert config["storage"] == {"postgres": {"postgres_url": {"env": "DAGSTER_PG_URL"}}}


def test_compose_instance_config_is_the_deploy_config_plus_the_docker_run_launcher(
    tmp_path, postgres_url, monkeypatch
):
    deploy = yaml.safe_load(DEPLOY_INSTANCE_CONFIG.read_text())
    compose = yaml.safe_load((COMPOSE / "dagster.yaml").read_text())
    assert {key: value for key, value in compose.items() if key != "run_launcher"} == deploy
    launcher = compose["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_docker", "DockerRunLauncher")
    # Each run joins the compose network and mounts the compose file's warehouse volume, where
    # DBT_DUCKDB_PATH points; deploy-down finds the runs' containers by the label.
    services = yaml.safe_load((COMPOSE / "docker-compose.yaml").read_text())
    assert launcher["config"]["network"] == services["networks"]["default"]["name"]
    (volume,) = launcher["config"]["container_kwargs"]["volumes"]
    assert volume == f"{services['volumes']['warehouse']['name']}:/warehouse"
    environment = services["services"]["daemon"]["environment"]
    assert environment["DBT_DUCKDB_PATH"] == "/warehouse/analytics.duckdb"
    assert set(launcher["config"]["env_vars"]) == {"DAGSTER_PG_URL", "DBT_DUCKDB_PATH"}
    noxfile = (REPO_ROOT / "noxfile.py").read_text()
    (label,) = launcher["config"]["container_kwargs"]["labels"].items()
    assert f'DEPLOYMENT_LABEL = "{label[0]}={label[1]}"' in noxfile
    # And Dagster loads it: PostgreSQL, the Docker launcher, monitoring that fails dead runs.
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((COMPOSE / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_PG_URL", postgres_url)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_launcher).__name__ == "DockerRunLauncher"
        assert instance.run_launcher.supports_check_run_worker_health
        assert instance.run_monitoring_max_resume_run_attempts == 0


def test_compose_starts_the_webserver_and_daemon_once_the_code_server_serves():
    """A daemon that loads the workspace before the code server serves it keeps the load error
    until its next refresh (a minute) and fails every run it dequeues meanwhile."""
    services = yaml.safe_load((COMPOSE / "docker-compose.yaml").read_text())["services"]
    for waiting in ("webserver", "daemon"):
        assert services[waiting]["depends_on"]["user_code"] == {"condition": "service_healthy"}
    (location,) = yaml.safe_load((COMPOSE / "workspace.yaml").read_text())["load_from"]
    served_port = int(re.search(r'"--port", "(\d+)"', DOCKERFILE).group(1))
    assert location["grpc_server"]["port"] == served_port
    assert services["user_code"]["healthcheck"]["test"] == [
        "CMD", "dagster", "api", "grpc-health-check", "--port", str(served_port),
    ]  # fmt: skip


def test_image_installs_the_lock_with_the_readme_uv_and_the_oldest_supported_python():
    uv_version = re.search(r'"uv==([\d.]+)"', (REPO_ROOT / "README.md").read_text()).group(1)
    python = supported_pythons()[0]
    stages = re.findall(r"^FROM (\S+)", DOCKERFILE, flags=re.MULTILINE)
    assert stages == [
        f"ghcr.io/astral-sh/uv:{uv_version}-python{python}-bookworm-slim",
        f"python:{python}-slim-bookworm",
    ]
    syncs = re.findall(r"uv sync[^\n\\&]*", DOCKERFILE)
    assert syncs and all("--frozen" in sync for sync in syncs)
    assert "dg utils refresh-defs-state" in DOCKERFILE


def test_image_and_helm_values_serve_the_projects_entry_module_and_variables():
    served = re.search(r'"--module-name", "([\w.]+)"', DOCKERFILE).group(1)
    (deployment,) = HELM_VALUES["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", served]
    assert importlib.util.find_spec(served) is not None
    env = {item["name"]: item["value"] for item in deployment["env"]}
    assert env["DBT_TARGET"] == "prod" and "prod:" in PROFILES
    assert set(env) == {name for name in env if f"env_var('{name}'" in PROFILES}
    assert HELM_VALUES["runLauncher"]["type"] == "K8sRunLauncher"
    # The chart renders `concurrency.pools` into the instance's dagster.yaml: the local rules.
    local = LOCAL_INSTANCE_CONFIG["concurrency"]["pools"]
    assert HELM_VALUES["concurrency"]["pools"] == {
        "defaultLimit": local["default_limit"],
        "granularity": local["granularity"],
    }


@pytest.mark.parametrize(
    "path", [".local_defs_state", "dagster_home", ".venv", "analytics_dbt/target"]
)
def test_image_leaves_out_generated_state(path):
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert any(path in pattern for pattern in ignored)


def test_every_test_the_deploy_page_names_exists():
    page = (REPO_ROOT / "deploy" / "README.md").read_text()
    named = set(re.findall(r"`(test_\w+)`", page))
    defined = {
        name
        for folder in ("tests", "containers")
        for source in (REPO_ROOT / folder).glob("test_*.py")
        for name in re.findall(r"^def (test_\w+)", source.read_text(), flags=re.MULTILINE)
    }
    assert len(named) >= 5
    assert named <= defined, named - defined


def test_deploy_up_keeps_one_random_database_password_unless_one_is_given(tmp_path, monkeypatch):
    noxfile = load_noxfile()
    monkeypatch.setattr(noxfile, "COMPOSE", tmp_path)
    monkeypatch.delenv("DAGSTER_PG_PASSWORD", raising=False)
    first = noxfile.deployment_secrets()
    assert set(first) == {"DAGSTER_PG_PASSWORD"} and len(first["DAGSTER_PG_PASSWORD"]) >= 32
    assert (tmp_path / ".env").stat().st_mode & 0o777 == 0o600  # readable by its owner only
    assert noxfile.deployment_secrets() == first  # the same database on every later deploy-up
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "given")
    assert noxfile.deployment_secrets() == {}  # docker-compose reads the environment's
    assert "deploy/compose/.env" in (REPO_ROOT / ".gitignore").read_text().splitlines()
