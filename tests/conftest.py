import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from filelock import FileLock

from harness import DEPLOY_INSTANCE_CONFIG, REPO_ROOT, STORAGES, copy_dbt_project, parse
from postgres_server import PostgresServer

# A fixed simulated date, later than any real materialization the tests record.
SIMULATED_DAY = datetime(2031, 3, 4, tzinfo=UTC)


@pytest.fixture
def duckdb_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh DuckDB file (not yet created) that dbt and the component will write."""
    path = tmp_path / "warehouse" / "analytics.duckdb"
    monkeypatch.setenv("DBT_DUCKDB_PATH", str(path))
    return path


@pytest.fixture(scope="session")
def parsed_dbt_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped dbt project, parsed once per test session (its manifest is read-only)."""
    project_dir = copy_dbt_project(tmp_path_factory.mktemp("parsed") / "analytics_dbt")
    parse(project_dir)
    return project_dir


@pytest.fixture
def dbt_project(tmp_path: Path, duckdb_file: Path, parsed_dbt_project: Path) -> Path:
    """A copy of the shipped dbt project, with its manifest, that a test may edit."""
    return copy_dbt_project(
        tmp_path / "analytics_dbt", source=parsed_dbt_project, keep_manifest=True
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked `both_storages` that use an instance run once per instance storage."""
    if metafunc.definition.get_closest_marker("both_storages") and (
        "instance" in metafunc.fixturenames
    ):
        metafunc.parametrize("storage", STORAGES, indirect=True)


@pytest.fixture
def storage(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server of this test worker's own, on loopback."""
    with PostgresServer.running() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A new, empty database on the test PostgreSQL server, as DAGSTER_PG_URL gives it."""
    database = postgres_server.create_database()
    yield postgres_server.url(database)
    postgres_server.drop_database(database)


@pytest.fixture
def instance(tmp_path: Path, storage: str, request: pytest.FixtureRequest):
    """A real Dagster instance on a temporary DAGSTER_HOME: SQLite as `nox -s dev` uses, or
    PostgreSQL through the shipped deploy/dagster.yaml, as a deployment uses."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    if storage == "sqlite":
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            yield instance
        return
    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setenv("DAGSTER_PG_URL", request.getfixturevalue("postgres_url"))
    shutil.copy(DEPLOY_INSTANCE_CONFIG, home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


@pytest.fixture
def before_daily_tick() -> datetime:
    return SIMULATED_DAY.replace(hour=5, minute=0)


@pytest.fixture
def after_daily_tick() -> datetime:
    """Mid-morning: today's 06:00 tick is behind the clock, tomorrow's far ahead."""
    return SIMULATED_DAY.replace(hour=9, minute=0)


@pytest.fixture(scope="session")
def shipped_defs(tmp_path_factory: pytest.TempPathFactory) -> dg.Definitions:
    """The project's own definitions, loaded as `dg` loads them, from freshly refreshed state."""
    shared = tmp_path_factory.getbasetemp().parent  # one folder for all xdist workers
    with FileLock(shared / "refresh-defs-state.lock"):
        marker = shared / "refresh-defs-state.done"
        if not marker.exists():
            subprocess.run(["dg", "utils", "refresh-defs-state"], cwd=REPO_ROOT, check=True)
            marker.touch()
    from dbt_automation_demo.definitions import defs

    return defs()
