"""The Codespaces door, in a real container: `devcontainer up` on the committed
`.devcontainer/devcontainer.json`, then the README's sessions inside it (`nox -s container`):
`check`, `demo`, `dev`, and the door's subset of `nox -s tests` (DOOR_TESTS).

As close to a Codespace as this machine allows. The Docker engine is Debian's. The base image is
pulled, or, where no registry serves it (as here), a stand-in built from Debian bookworm's
packages and tagged with its name (`containers/base_images.sh`). And the container shares the
host's network, with the host's CA bundle, to reach the same package registries as the host:
those are the only overrides of the committed file. Everything else, the image's name, the
commands run on create, the environment and the forwarded port, is the committed file's.
"""

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import json5
import pytest
from docker_harness import DOCKER, HERE, base_images, checkout_copy

from harness import ALL_ASSETS, REPO_ROOT, SOURCES
from live_server import graphql, wait_for

pytestmark = pytest.mark.container

DEVCONTAINER_CLI = HERE / "node_modules" / ".bin" / "devcontainer"
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
FORWARDED_PORT = 3000  # the committed forwardPorts; on the host network, the same port
READY_SECONDS = 300
# The subset of `nox -s tests` run inside (README: doors): the live dev server on SQLite, a seed
# and an edited view each refreshing their view, and the browser. The whole suite takes 10
# minutes on 2 cores; this subset shows the container has what the live tests need. (PostgreSQL:
# the first test checks the server is installed; these tests run on it on the host.)
DOOR_TESTS = ("tests/test_live_dev_server.py", "-k", "sqlite")
DOOR_TEST_ITEMS = 6
INSTIGATORS = """
{ repositoriesOrError { ... on RepositoryConnection { nodes {
    sensors { name sensorState { status } } schedules { name scheduleState { status } }
} } } }
"""


@pytest.fixture(scope="module")
def devcontainer(docker_engine, tmp_path_factory) -> Iterator["Devcontainer"]:
    """`devcontainer up` on a copy of the checkout; the container is removed however it ends."""
    committed = committed_devcontainer()
    base_images(committed["image"])
    folder = tmp_path_factory.mktemp("codespace")
    workspace = checkout_copy(folder / "dbt-automation-demo")
    config = folder / "config" / "devcontainer.json"
    config.parent.mkdir()
    config.write_text(json.dumps(with_this_machines_plumbing(committed), indent=2))
    container = Devcontainer(workspace, config)
    try:
        container.up()
        yield container
    finally:
        container.remove()


def committed_devcontainer() -> dict:
    return json5.loads((REPO_ROOT / ".devcontainer" / "devcontainer.json").read_text())


def with_this_machines_plumbing(config: dict) -> dict:
    """The committed config on the host's network, with the host's CA bundle."""
    return {
        **config,
        "runArgs": ["--network=host"],
        "mounts": [f"source={HOST_CA_BUNDLE},target={HOST_CA_BUNDLE},type=bind,readonly"],
        "containerEnv": {**config["containerEnv"], "SSL_CERT_FILE": HOST_CA_BUNDLE},
    }


class Devcontainer:
    def __init__(self, workspace: Path, config: Path):
        self.workspace = workspace
        self.cli = [
            str(DEVCONTAINER_CLI),
            *("--docker-path", DOCKER),
            *("--workspace-folder", str(workspace)),
            *("--config", str(config)),
        ]
        self.outcome: dict = {}

    def up(self) -> None:
        created = subprocess.run(
            [self.cli[0], "up", *self.cli[1:]], capture_output=True, text=True, timeout=900
        )
        self.outcome = json.loads(created.stdout.strip().splitlines()[-1])
        assert self.outcome["outcome"] == "success", created.stdout[-5000:] + created.stderr

    def exec(self, *command: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.cli[0], "exec", *self.cli[1:], *command],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, *command: str, log: Path) -> subprocess.Popen:
        with log.open("w") as out:
            return subprocess.Popen(
                [self.cli[0], "exec", *self.cli[1:], *command], stdout=out, stderr=out
            )

    def remove(self) -> None:
        if "containerId" in self.outcome:
            subprocess.run([DOCKER, "rm", "--force", self.outcome["containerId"]], check=True)


def test_creating_the_container_syncs_the_venv_the_editor_uses(devcontainer):
    interpreter = committed_devcontainer()["customizations"]["vscode"]["settings"][
        "python.defaultInterpreterPath"
    ].replace("${containerWorkspaceFolder}", devcontainer.outcome["remoteWorkspaceFolder"])
    imported = devcontainer.exec(
        interpreter, "-c", "import sys, dagster, dbt.version; print(sys.version_info[:2])"
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip().splitlines()[-1] == "(3, 11)"
    server = devcontainer.exec("bash", "-c", "ls /usr/lib/postgresql/*/bin/pg_ctl")
    assert server.returncode == 0, server.stderr  # onCreateCommand installed PostgreSQL


def test_nox_check_passes_inside_the_container(devcontainer):
    checked = devcontainer.exec("nox", "-s", "check")
    assert checked.returncode == 0, checked.stdout[-5000:] + checked.stderr[-5000:]
    assert "All definitions loaded successfully." in checked.stdout + checked.stderr


def test_nox_demo_prints_the_walkthroughs_inside_the_container(devcontainer):
    demo = devcontainer.exec("nox", "-s", "demo")
    assert demo.returncode == 0, demo.stdout[-5000:] + demo.stderr[-5000:]
    headings = re.findall(r"^== .*$", demo.stdout, flags=re.MULTILINE)
    assert [heading.split(":")[0] for heading in headings] == [
        "== Walkthrough 1",
        "== Walkthrough 2",
        "== Walkthrough 3",
        "== Walkthrough 4",
        "== Walkthrough 5",
        "== Walkthrough 6",
        "== Walkthrough 7",
    ]
    (failed,) = [line for line in demo.stdout.splitlines() if "FAILED" in line]
    assert "dbt build stg_orders: FAILED: stg_orders' test accepted_values_" in failed


def test_nox_tests_runs_the_live_and_browser_tests_inside_the_container(devcontainer):
    assert f"`{' '.join(DOOR_TESTS)}`" in (REPO_ROOT / "README.md").read_text()  # as it says
    tested = devcontainer.exec("nox", "-s", "tests", "--", *DOOR_TESTS, timeout=1800)
    output = tested.stdout + tested.stderr
    assert tested.returncode == 0, output[-8000:]
    (summary,) = re.findall(r"^=+ (.*) in [\d.]+s.*=+$", output, flags=re.MULTILINE)
    outcomes = {word: int(count) for count, word in re.findall(r"(\d+) (\w+)", summary)}
    outcomes.pop("warnings", None)
    assert outcomes == {"passed": DOOR_TEST_ITEMS}, summary  # nothing skipped, nothing failed


def test_nox_dev_inside_the_container_answers_on_the_forwarded_port(devcontainer, tmp_path):
    assert committed_devcontainer()["forwardPorts"] == [FORWARDED_PORT]
    dev = devcontainer.start("nox", "-s", "dev", log=tmp_path / "dev.log")
    try:
        asset_nodes = wait_for(
            "the dev server in the container to load the project",
            lambda: graphql_from_the_host("{ assetNodes { assetKey { path } } }"),
            READY_SECONDS,
            every=2,
        )["assetNodes"]
        assert {"/".join(node["assetKey"]["path"]) for node in asset_nodes} == (
            ALL_ASSETS | SOURCES
        )
        (repo,) = graphql_from_the_host(INSTIGATORS)["repositoriesOrError"]["nodes"]
        assert [(s["name"], s["sensorState"]["status"]) for s in repo["sensors"]] == [
            ("analytics_automation_sensor", "RUNNING")
        ]
        assert sorted((s["name"], s["scheduleState"]["status"]) for s in repo["schedules"]) == [
            ("hourly_dbt_tables_job_schedule", "RUNNING"),
            ("observe_analytics_dbt_sources_schedule", "RUNNING"),
        ]
    finally:
        devcontainer.exec("pkill", "-TERM", "-f", "dbt_automation_demo.dev_server", timeout=60)
        dev.wait(timeout=120)


def graphql_from_the_host(query: str) -> dict | None:
    """The answer on the forwarded port, or None while nothing answers or nothing is loaded."""
    try:
        data = graphql(f"http://127.0.0.1:{FORWARDED_PORT}", query)
    except OSError:
        return None
    return data if data.get("assetNodes", True) else None
