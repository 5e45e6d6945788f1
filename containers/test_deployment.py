"""The team deployment (deploy/compose), started and stopped by `nox -s deploy-up` and
`nox -s deploy-down` on a clean copy of the checkout (`nox -s container`).

PostgreSQL, the code server, the webserver and the daemon each run in a container of their own;
the daemon's Docker run launcher starts every run as a new container of the project's image,
with the warehouse volume mounted. The base images are pulled, or stand-ins where no registry
serves them (`containers/base_images.sh`); the Docker client is Debian's, as its engine.
"""

import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from docker_harness import base_images, checkout_copy, docker

from harness import ALL_ASSETS, REPO_ROOT, SOURCES, WHOLE_MARTS, mart_rows, readme_block
from live_server import (
    INSTIGATORS,
    SENSOR_INTERVAL_SECONDS,
    automation_runs,
    expect_one_automation_run_of,
    finished,
    graphql,
    launch_run,
    observed_by_hand_only,
    stop_the_hourly_schedule,
    wait_for,
    wait_until_clear_of_clock_ticks,
)

pytestmark = pytest.mark.container

PROJECT = "dbt-automation-demo"
IMAGE = "dbt-automation-demo:deploy"
RUN_LABEL = "dbt-automation-demo/deployment=compose"
COMPOSE = REPO_ROOT / "deploy" / "compose"
WEBSERVER = "http://127.0.0.1:3000"
READY_SECONDS = 300
RUN_SECONDS = 300
# Run monitoring looks at each started run's container once per poll interval; the queue then
# starts the next run, a new container, within seconds.
POLL_SECONDS = yaml.safe_load((COMPOSE / "dagster.yaml").read_text())["run_monitoring"][
    "poll_interval_seconds"
]
NEXT_RUN_STARTS_WITHIN = POLL_SECONDS + 30
RUN = """
query Run($runId: ID!) { runOrError(runId: $runId) { ... on Run {
    status tags { key value } assetMaterializations { assetKey { path } }
    eventConnection { events { __typename ... on MessageEvent { message } } }
} } }
"""


def documented_commands() -> tuple[list[str], list[str]]:
    """The production page's two commands (docs/production.md), as this test runs them."""
    up, down = (line.split("#")[0].split() for line in readme_block("deploy").splitlines())
    assert (up, down) == (["nox", "-s", "deploy-up"], ["nox", "-s", "deploy-down"])
    return up[1:], down[1:]


UP, DOWN = documented_commands()


@dataclass
class Deployment:
    checkout: Path
    env: dict[str, str]

    def graphql(self, query: str, **variables) -> dict:
        return graphql(WEBSERVER, query, timeout=60, **variables)

    def nox(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(Path(sys.executable).parent / "nox"), *args],
            cwd=self.checkout, env=self.env, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip


@pytest.fixture(scope="module")
def deployment(docker_engine, tmp_path_factory) -> Iterator[Deployment]:
    """`nox -s deploy-up` on a clean copy; `deploy-down --volumes` however the tests end."""
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    compose = yaml.safe_load((COMPOSE / "docker-compose.yaml").read_text())
    base_images(
        *re.findall(r"^FROM (\S+)", dockerfile, flags=re.MULTILINE),
        compose["services"]["postgresql"]["image"],
    )
    assert port_is_free(3000), "port 3000 is taken: the deployment's webserver publishes it"
    checkout = checkout_copy(tmp_path_factory.mktemp("deployment") / PROJECT)
    env = {
        **os.environ,
        "PATH": f"/usr/bin{os.pathsep}{os.environ['PATH']}",  # Debian's Docker client first
        "DAGSTER_PG_PASSWORD": secrets.token_urlsafe(16),
        # The sensor every 5 s instead of 30 (as the live tests): the waits for "nothing else
        # follows" are counted in ticks.
        "AUTOMATION_SENSOR_INTERVAL_SECONDS": str(SENSOR_INTERVAL_SECONDS),
        # The sources' first observation would launch a run of stg_payments at a moment no
        # test chooses: these tests observe nothing.
        "DBT_SOURCE_OBSERVATION_CRON": observed_by_hand_only(),
    }
    deployment = Deployment(checkout, env)
    wait_until_clear_of_clock_ticks()
    try:
        up = deployment.nox(*UP)
        assert up.returncode == 0, up.stdout[-5000:] + up.stderr[-5000:]
        yield deployment
    finally:
        deployment.nox(*DOWN, "--", "--volumes")


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def loaded(deployment: Deployment) -> list | None:
    try:
        return deployment.graphql("{ assetNodes { assetKey { path } } }")["assetNodes"] or None
    except OSError:
        return None


def service_containers() -> dict[str, tuple[str, str]]:
    """Compose service -> (image, state) of the deployment's containers."""
    listed = docker(
        "ps", "--all", "--filter", f"label=com.docker.compose.project={PROJECT}",
        "--format", '{{.Label "com.docker.compose.service"}} {{.Image}} {{.State}}',
    )  # fmt: skip
    rows = map(str.split, listed.stdout.splitlines())
    return {name: (image, state) for name, image, state in rows}


def run_containers() -> list[str]:
    """The short ids of the runs' containers, running or not."""
    return docker("ps", "--all", "--quiet", "--filter", f"label={RUN_LABEL}").stdout.split()


def inspect(container: str, template: str) -> str:
    return docker("inspect", "--format", template, container).stdout.strip()


def container_of(deployment: Deployment, run_id: str) -> str:
    tags = deployment.graphql(RUN, runId=run_id)["runOrError"]["tags"]
    return {tag["key"]: tag["value"] for tag in tags}.get("docker/container_id", "")


def status(deployment: Deployment, run_id: str) -> str:
    return deployment.graphql(RUN, runId=run_id)["runOrError"]["status"]


def warehouse_rows(folder: Path) -> dict[str, int]:
    """The marts' row counts, read from a copy of the warehouse volume's DuckDB file."""
    copied = docker(
        "run", "--rm", "--network=none", "--entrypoint", "sh",
        "--volume", "dbt-automation-demo-warehouse:/warehouse:ro",
        "--volume", f"{folder}:/out", IMAGE, "-c", "cp /warehouse/analytics.duckdb* /out/",
    )  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    return mart_rows(folder / "analytics.duckdb")


def test_the_webserver_shows_the_assets_the_sensor_and_the_schedules_running(deployment):
    nodes = wait_for("the webserver to load the code server", lambda: loaded(deployment),
                     READY_SECONDS)  # fmt: skip
    assert {"/".join(node["assetKey"]["path"]) for node in nodes} == ALL_ASSETS | SOURCES
    (repo,) = deployment.graphql(INSTIGATORS)["repositoriesOrError"]["nodes"]
    assert [(s["name"], s["sensorState"]["status"]) for s in repo["sensors"]] == [
        ("analytics_automation_sensor", "RUNNING")
    ]
    assert sorted((s["name"], s["scheduleState"]["status"]) for s in repo["schedules"]) == [
        ("hourly_dbt_tables_job_schedule", "RUNNING"),
        ("observe_analytics_dbt_sources_schedule", "RUNNING"),
    ]
    assert service_containers() == {
        "postgresql": ("postgres:15-bookworm", "running"),
        "user_code": (IMAGE, "running"),
        "webserver": (IMAGE, "running"),
        "daemon": (IMAGE, "running"),
    }


def test_a_seed_run_makes_the_daemons_sensor_launch_one_run_of_its_view_in_a_new_container(
    deployment,
):
    wait_for("the webserver to load the code server", lambda: loaded(deployment), READY_SECONDS)
    stop_the_hourly_schedule(deployment)  # from here on, only the sensor and the tests
    seed_run = launch_run(deployment, ["raw_customers"])
    assert wait_for("the seed run", lambda: finished(deployment, seed_run), RUN_SECONDS) == (
        "SUCCESS"
    )
    expect_one_automation_run_of(deployment, 0, {"stg_customers"})
    (view_run,) = automation_runs(deployment)
    containers = [container_of(deployment, run["runId"]) for run in (view_run, {"runId": seed_run})]
    services = docker(
        "ps", "--quiet", "--no-trunc", "--filter", f"label=com.docker.compose.project={PROJECT}"
    ).stdout.split()  # full ids, as the runs' docker/container_id tags
    for container in containers:  # each run: a container of its own, of the image, exited 0
        assert container and container not in services
        assert inspect(container, "{{.Config.Image}} {{.State.Status}} {{.State.ExitCode}}") == (
            f"{IMAGE} exited 0"
        )
    assert len(set(containers)) == 2
    assert sorted(run_containers()) == sorted(c[:12] for c in containers)


def test_two_runs_that_need_the_warehouse_run_one_after_another(deployment, tmp_path):
    first, second = launch_run(deployment, ALL_ASSETS), launch_run(deployment, ALL_ASSETS)
    for run_id in (first, second):
        ended = wait_for("the run", lambda r=run_id: finished(deployment, r), 2 * RUN_SECONDS)
        assert ended == "SUCCESS"
    lifetimes = sorted(
        (inspect(container_of(deployment, run_id), "{{.State.StartedAt}}"),
         inspect(container_of(deployment, run_id), "{{.State.FinishedAt}}"))
        for run_id in (first, second)
    )  # fmt: skip
    assert lifetimes[0][1] <= lifetimes[1][0], lifetimes  # one container ended before the next
    assert warehouse_rows(tmp_path) == WHOLE_MARTS


def test_a_run_container_killed_mid_build_fails_and_the_queued_run_then_builds_it_whole(
    deployment, tmp_path
):
    before = warehouse_rows(tmp_path / "before")
    killed = launch_run(deployment, ALL_ASSETS)
    wait_for(
        "the run to materialize its first asset",
        lambda: deployment.graphql(RUN, runId=killed)["runOrError"]["assetMaterializations"],
        RUN_SECONDS,
        every=0.5,
    )
    queued = launch_run(deployment, ALL_ASSETS)
    assert status(deployment, queued) == "QUEUED"  # the warehouse's pool holds it back
    assert docker("kill", container_of(deployment, killed)).returncode == 0
    killed_at = time.monotonic()

    assert wait_for("the killed run to fail", lambda: finished(deployment, killed),
                    NEXT_RUN_STARTS_WITHIN) == "FAILURE"  # fmt: skip
    run = deployment.graphql(RUN, runId=killed)["runOrError"]
    built = {"/".join(m["assetKey"]["path"]) for m in run["assetMaterializations"]}
    assert built and built < ALL_ASSETS  # killed mid-build
    messages = [event.get("message") or "" for event in run["eventConnection"]["events"]]
    assert any("Container status is exited" in message for message in messages)  # monitoring
    wait_for(
        "the queued run to start",
        lambda: status(deployment, queued) not in {"QUEUED", "NOT_STARTED"},
        NEXT_RUN_STARTS_WITHIN - (time.monotonic() - killed_at),
    )
    assert wait_for("the queued run", lambda: finished(deployment, queued), RUN_SECONDS) == (
        "SUCCESS"
    )
    assert before == WHOLE_MARTS
    assert warehouse_rows(tmp_path / "after") == before


def test_deploy_down_leaves_no_container_running_and_keeps_the_data_unless_asked(deployment):
    down = deployment.nox(*DOWN)
    assert down.returncode == 0, down.stdout[-5000:] + down.stderr[-5000:]
    assert service_containers() == {}
    assert run_containers() == []
    volumes = {"dbt-automation-demo-postgresql", "dbt-automation-demo-warehouse"}
    assert volumes <= set(docker("volume", "ls", "--quiet").stdout.split())
    down = deployment.nox(*DOWN, "--", "--volumes")
    assert down.returncode == 0, down.stdout[-5000:] + down.stderr[-5000:]
    assert not volumes & set(docker("volume", "ls", "--quiet").stdout.split())
