"""The production image (`Dockerfile`), built and served: its code server in a container, a
Dagster on the host pointed at it over gRPC, as deploy/README.md's Helm values point the
webserver and daemon at the user-code deployment (`nox -s container`).

The image's two bases are pulled, or, where no registry serves them (as here), stand-ins built
from Debian bookworm's packages and tagged with their names (`containers/base_images.sh`). The
container shares the host's network and a folder holding the instance and the warehouse, as a
run pod would mount a volume. Nothing else is overridden.
"""

import os
import re
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from docker_harness import DOCKER, base_images, checkout_copy, docker

from harness import ALL_ASSETS, REPO_ROOT, SOURCES, WHOLE_MARTS, mart_rows
from live_server import free_port, graphql, launch_run, observed_by_hand_only, wait_for

pytestmark = pytest.mark.container

IMAGE = "dbt-automation-demo:container-test"
CODE_SERVER_PORT = 3030  # the image's EXPOSE and CMD
READY_SECONDS = 300
RUN_SECONDS = 300
STOP_SECONDS = 60
WORKSPACE = """
load_from:
  - grpc_server:
      host: 127.0.0.1
      port: {port}
      location_name: analytics
"""
INSTIGATORS = """
{ repositoriesOrError { ... on RepositoryConnection { nodes {
    sensors { name } schedules { name }
} } } }
"""
RUN_STATUS = """
query Status($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }
"""


@dataclass
class Deployment:
    shared: Path  # the instance and the warehouse, on the host and at the same path inside
    url: str

    def graphql(self, query: str, **variables) -> dict:
        return graphql(self.url, query, timeout=60, **variables)


@pytest.fixture(scope="module")
def image(docker_engine, tmp_path_factory) -> str:
    """The committed Dockerfile built on a clean copy of the checkout."""
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    base_images(*re.findall(r"^FROM (\S+)", dockerfile, flags=re.MULTILINE))
    context = checkout_copy(tmp_path_factory.mktemp("image") / "dbt-automation-demo")
    built = docker(
        "build",
        "--network=host",
        "--tag",
        IMAGE,
        str(context),
        env={**os.environ, "DOCKER_BUILDKIT": "1"},
        timeout=1800,
    )
    assert built.returncode == 0, built.stdout[-5000:] + built.stderr[-5000:]
    return IMAGE


@pytest.fixture(scope="module")
def deployment(image, tmp_path_factory) -> Iterator[Deployment]:
    """The image's code server (its own CMD), and, once it serves, `dagster dev` on the host
    loading it over gRPC; both stopped however the tests end."""
    shared = tmp_path_factory.mktemp("deployment")
    (shared / "dagster_home").mkdir()
    (shared / "dagster_home" / "dagster.yaml").write_text(
        (REPO_ROOT / "dagster_home" / "dagster.yaml").read_text()
    )
    (shared / "workspace.yaml").write_text(WORKSPACE.format(port=CODE_SERVER_PORT))
    started = docker(
        "run",
        "--detach",
        "--network=host",
        *("--volume", f"{shared}:{shared}"),
        *("--env", f"DBT_DUCKDB_PATH={shared / 'warehouse' / 'analytics.duckdb'}"),
        # No source observation during the tests (its first would launch a run of stg_payments).
        *("--env", f"DBT_SOURCE_OBSERVATION_CRON={observed_by_hand_only()}"),
        image,
    )
    assert started.returncode == 0, started.stderr
    container = started.stdout.strip()
    try:
        # The webserver and the daemon start once the code is served, as the compose file's
        # health check orders them: a daemon that loads the workspace first keeps the load error
        # for a minute and fails the runs it dequeues.
        wait_for("the image's code server to serve", code_server_serves, READY_SECONDS, every=2)
        yield from dagster_dev_on_the_host(shared)
    finally:
        subprocess.run([DOCKER, "rm", "--force", container], check=True, capture_output=True)


def dagster_dev_on_the_host(shared: Path) -> Iterator[Deployment]:
    port = free_port()
    log = shared / "dagster-dev.log"
    with log.open("w") as out:
        host = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-p", str(port)],
            cwd=shared,
            # PYTHONFAULTHANDLER: SIGABRT makes each process write its threads' stacks first.
            env={
                **os.environ,
                "DAGSTER_HOME": str(shared / "dagster_home"),
                "PYTHONFAULTHANDLER": "1",
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Deployment(shared, f"http://127.0.0.1:{port}")
    finally:
        stop_the_host(host, log)


def stop_the_host(host: subprocess.Popen, log: Path) -> None:
    """SIGTERM, as a deployment stops its webserver and daemon. The host stands in for the Helm
    deployment and is not what these tests check: if it has not exited after STOP_SECONDS
    (seen twice: its daemon hung after "Daemon threads shut down"), every process of it writes
    its stacks to the log and ends, and the test warns with them instead of failing."""
    os.killpg(host.pid, signal.SIGTERM)
    try:
        host.wait(timeout=STOP_SECONDS)
        return
    except subprocess.TimeoutExpired:
        os.killpg(host.pid, signal.SIGABRT)
    try:
        host.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(host.pid, signal.SIGKILL)
        host.wait()
    written = log.read_text()
    stacks = written.find("Fatal Python error")
    warnings.warn(
        f"dagster dev on the host did not exit within {STOP_SECONDS} s of SIGTERM; what its "
        f"processes wrote on SIGABRT ({log}):\n{written[stacks if stacks >= 0 else -5000 :]}",
        stacklevel=1,
    )


def code_server_serves() -> bool:
    health = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "api", "grpc-health-check",
         "--port", str(CODE_SERVER_PORT)],
        capture_output=True, timeout=60,
    )  # fmt: skip
    return health.returncode == 0


def loaded(deployment: Deployment) -> list | None:
    try:
        return deployment.graphql("{ assetNodes { assetKey { path } } }")["assetNodes"] or None
    except OSError:
        return None


def test_the_image_serves_the_assets_the_sensor_and_the_schedules_over_grpc(deployment):
    asset_nodes = wait_for(
        "the host to load the image's code", lambda: loaded(deployment), READY_SECONDS
    )
    assert {"/".join(node["assetKey"]["path"]) for node in asset_nodes} == ALL_ASSETS | SOURCES
    (repo,) = deployment.graphql(INSTIGATORS)["repositoriesOrError"]["nodes"]
    assert [sensor["name"] for sensor in repo["sensors"]] == ["analytics_automation_sensor"]
    assert sorted(schedule["name"] for schedule in repo["schedules"]) == [
        "hourly_dbt_tables_job_schedule",
        "observe_analytics_dbt_sources_schedule",
    ]


def test_a_run_launched_against_the_image_succeeds_and_builds_the_warehouse(deployment):
    wait_for("the host to load the image's code", lambda: loaded(deployment), READY_SECONDS)
    # Every asset, named, as the UI's "Materialize all" sends them; dbt runs in the container.
    run_id = launch_run(deployment, ALL_ASSETS)
    status = wait_for(
        "the run to finish",
        lambda: (
            (s := deployment.graphql(RUN_STATUS, runId=run_id)["runOrError"]["status"])
            in {"SUCCESS", "FAILURE", "CANCELED"}
            and s
        ),
        RUN_SECONDS,
        every=2,
    )
    assert status == "SUCCESS", (deployment.shared / "dagster-dev.log").read_text()[-5000:]
    assert mart_rows(deployment.shared / "warehouse" / "analytics.duckdb") == WHOLE_MARTS
