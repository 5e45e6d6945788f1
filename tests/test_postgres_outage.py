"""A PostgreSQL instance database that is down: a clear error at start-up, and nothing lost.

These tests stop and start a PostgreSQL server of their own (Debian's `postgresql` package).
"""

import shutil
import subprocess
import sys

import dagster as dg
import pytest

from harness import (
    DEPLOY_INSTANCE_CONFIG,
    copy_dagster_project,
    materialize,
    project_env,
    ready,
)
from live_server import free_port
from postgres_server import PostgresServer

DEV_SERVER_GIVES_UP_SECONDS = 120


@pytest.fixture(scope="module")
def outage_server():
    """A PostgreSQL server these tests may stop (the other tests' server is never stopped)."""
    with PostgresServer.running() as server:
        yield server


@pytest.fixture
def down(outage_server: PostgresServer):
    """The server stopped for the whole test; started again afterwards."""
    with outage_server.stopped():
        yield outage_server


@pytest.fixture
def instance_home(tmp_path, outage_server, monkeypatch):
    """A DAGSTER_HOME configured by the shipped deploy/dagster.yaml, on a new database."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY_INSTANCE_CONFIG, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_PG_URL", outage_server.url(outage_server.create_database()))
    return home


def start_dev_server(tmp_path, **env: str) -> subprocess.CompletedProcess:
    """`nox -s dev-postgres`'s command, in a copy of the project, on deploy/dagster.yaml."""
    project = copy_dagster_project(tmp_path / "project")
    shutil.copy(DEPLOY_INSTANCE_CONFIG, project / "dagster_home" / "dagster.yaml")
    return subprocess.run(
        [sys.executable, "-m", "dbt_automation_demo.dev_server", "--port", str(free_port())],
        cwd=project,
        env=project_env(project, **env),
        capture_output=True,
        text=True,
        timeout=DEV_SERVER_GIVES_UP_SECONDS,
    )


def test_dev_server_with_postgres_down_stops_at_once_naming_the_database(tmp_path, down):
    url = down.url("dagster").replace("postgres@", "postgres:s3cret@")
    started = start_dev_server(tmp_path, DAGSTER_PG_URL=url)
    assert started.returncode == 2
    message = started.stderr
    assert "not starting the dev server: cannot reach the instance database" in message
    assert "dagster_home/dagster.yaml: storage.postgres.postgres_url" in message
    assert f"{down.host}:{down.port}/dagster" in message
    assert "s3cret" not in message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (None, "reads the environment variable DAGSTER_PG_URL, which is not set"),
        (
            "postgresql://dagster@127.0.0.1:5432/dagster",
            "name the driver, postgresql+psycopg2://",
        ),
    ],
    ids=["unset", "bare-scheme"],
)
def test_dev_server_with_a_bad_database_url_says_what_to_fix(tmp_path, monkeypatch, url, expected):
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    started = start_dev_server(tmp_path, **({"DAGSTER_PG_URL": url} if url else {}))
    assert started.returncode == 2
    assert expected in started.stderr


def test_tick_during_an_outage_fails_and_the_next_one_requests_the_view_once(
    dbt_project, instance_home, outage_server, after_daily_tick
):
    with dg.DagsterInstance.from_config(str(instance_home)) as instance:
        defs, ticker = ready(dbt_project, instance, after_daily_tick)
        materialize(defs, instance, ["raw_customers"])

        with outage_server.stopped(), pytest.raises(Exception, match=r"(?i)connection|server"):
            ticker.tick()

        assert ticker.tick() == {"stg_customers"}
        assert [ticker.tick() for _ in range(2)] == [set(), set()]
