"""The dev server as a person starts it (`nox -s dev`), in a copy of the project, and a client."""

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from dbt_automation_demo.internals.blocking_tests import DBT_EXECUTABLE
from harness import ASSET_JOB, project_env

READY_SECONDS = 180
DOCUMENTED_PORT = 3000  # the README's http://127.0.0.1:3000
SENSOR_INTERVAL_SECONDS = 5


def observed_by_hand_only() -> str:
    """A cron for the source observation that does not come within a server's life (daily,
    twelve hours from now): the tests launch each observation themselves, so the first one,
    which finds the landing zone's first batch, does not land in another test's window."""
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=12)
    return f"{later.minute} {later.hour} * * *"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, check: Callable[[], Any], seconds: float, every: float = 1.0) -> Any:
    """Poll `check` until it returns something truthy; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


class DevServer:
    """`python -m dbt_automation_demo.dev_server [--port N]` in `project`, talked to over HTTP."""

    def __init__(self, project: Path, log: Path, *, as_documented: bool = False, **extra_env: str):
        """`as_documented`: no arguments at all, as `nox -s dev` runs it (the README's address);
        otherwise on a free port, so that several servers can run at once."""
        self.project = project
        self.port = DOCUMENTED_PORT if as_documented else free_port()
        self.args = [] if as_documented else ["--port", str(self.port)]
        self.url = f"http://127.0.0.1:{self.port}"
        venv_bin = str(Path(sys.executable).parent)
        self.env = project_env(
            project,
            PATH=f"{venv_bin}{os.pathsep}{os.environ['PATH']}",
            AUTOMATION_SENSOR_INTERVAL_SECONDS=str(SENSOR_INTERVAL_SECONDS),
            DBT_SOURCE_OBSERVATION_CRON=observed_by_hand_only(),
            **extra_env,
        )
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> "DevServer":
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "dbt_automation_demo.dev_server", *self.args],
                cwd=self.project,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for("the code location to load", self._loaded, READY_SECONDS)
        return self

    def _loaded(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"dev server exited: {self.log.read_text()[-3000:]}")
        try:
            return len(self.graphql("{ assetNodes { id } }")["assetNodes"]) > 0
        except OSError:
            return False

    def stop(self, sig: signal.Signals = signal.SIGTERM, seconds: float = 90) -> int:
        """Signal the server as a person or a process manager would, and wait for it."""
        self.process.send_signal(sig)
        return self.process.wait(timeout=seconds)

    def graphql(self, query: str, timeout: float = 30, **variables: Any) -> dict[str, Any]:
        return graphql(self.url, query, timeout, **variables)


def graphql(url: str, query: str, timeout: float = 30, **variables: Any) -> dict[str, Any]:
    """One GraphQL request to the Dagster webserver at `url`: the answer's data, without errors."""
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = json.load(response)
    assert "errors" not in body, body
    return body["data"]


def processes_under(folder: Path) -> dict[int, tuple[int, str]]:
    """Pid -> (parent pid, command line) of live processes whose working directory is `folder`
    or below (psutil: the same on Linux and macOS)."""
    found = {}
    for process in psutil.process_iter(["ppid", "cwd", "cmdline", "status"]):
        cwd, cmdline = process.info["cwd"], process.info["cmdline"]
        if cwd is None or cmdline is None or process.info["status"] == psutil.STATUS_ZOMBIE:
            continue  # gone, a zombie, or not ours to read
        if Path(cwd) == folder or folder in Path(cwd).parents:
            found[process.pid] = (process.info["ppid"], " ".join(cmdline))
    return found


def is_running(pid: int) -> bool:
    """The process exists and is not a zombie (ended, waiting for its parent to reap it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass(frozen=True)
class RunProcesses:
    """The processes of the runs a dev server (or a CLI run) is executing, by their place in
    the tree; a dbt left behind by a killed run worker (its parent is gone) is not one of them."""

    run_workers: list[int]  # one per run: a child of the code server, `dg dev`'s default launcher
    steps: list[int]  # a run worker's children started as Python processes: none, as the
    # project's runs execute their steps in process (Dagster's default starts one per step)
    dbt_builds: list[int]  # the component's `dbt build` (`dbt-blocking-tests`), by a run worker


def run_processes(folder: Path, run_worker: int | None = None) -> RunProcesses:
    """The run workers, step processes and dbt builds now running under `folder`; the run
    workers are the code server's children, or only `run_worker` (a CLI run's process)."""
    parents = processes_under(folder)

    def children_of(pids: set[int], doing: str) -> set[int]:
        return {pid for pid, (parent, cmd) in parents.items() if parent in pids and doing in cmd}

    code_servers = {pid for pid, (_, cmd) in parents.items() if "dagster api grpc" in cmd}
    workers = {run_worker} if run_worker else children_of(code_servers, "spawn_main")
    steps = children_of(workers, "spawn_main")
    return RunProcesses(
        run_workers=sorted(workers & set(parents)),
        steps=sorted(steps),
        dbt_builds=sorted(children_of(workers, f"{DBT_EXECUTABLE} build")),
    )


RUN_TIMES = """
{ runsOrError { ... on Runs { results { runId status startTime endTime } } } }
"""
RUNS = """
{ runsOrError { ... on Runs { results {
    runId status creationTime tags { key value } assetSelection { path }
} } } }
"""


LAUNCH = """
mutation Launch($location: String!, $repository: String!, $job: String!,
                $assets: [AssetKeyInput!]) {
  launchRun(executionParams: {
    selector: {repositoryLocationName: $location, repositoryName: $repository,
               jobName: $job, assetSelection: $assets}
    mode: "default"
  }) { __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } }
}
"""
REPOSITORY = (
    "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }"
)


def launch_run(server: Any, assets: Iterable[str] | None, job: str = ASSET_JOB) -> str:
    """A run of the asset job on `server` (anything with a `graphql` method), of `assets` named
    as the UI's *Materialize* sends them, or of the whole job (None, no selection recorded);
    or a run of another job, as its schedule or the *Jobs* page launches it."""
    (repo,) = server.graphql(REPOSITORY)["repositoriesOrError"]["nodes"]
    result = server.graphql(
        LAUNCH,
        location=repo["location"]["name"],
        repository=repo["name"],
        job=job,
        assets=None if assets is None else [{"path": [name]} for name in sorted(assets)],
    )["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def runs(server: DevServer) -> list[dict[str, Any]]:
    return server.graphql(RUNS)["runsOrError"]["results"]


def launched_by_automation(run: dict[str, Any]) -> bool:
    return {"key": "dagster/from_automation_condition", "value": "true"} in run["tags"]


def asset_names(run: dict[str, Any]) -> set[str]:
    return {"/".join(key["path"]) for key in run["assetSelection"] or []}


def kill_leftovers(folder: Path) -> None:
    """Whatever a failed test left running under `folder`: never leave a process behind."""
    for pid in processes_under(folder):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# The automation sensor and the hourly schedule of a served project, through GraphQL.
RUN_SECONDS = 180
INSTIGATORS = """
{ repositoriesOrError { ... on RepositoryConnection { nodes {
    name location { name }
    sensors { name sensorState { status } }
    schedules { name scheduleState { status } }
} } } }
"""
SENSOR_TICKS = """
query Ticks($location: String!, $repository: String!) {
  sensorOrError(sensorSelector: {repositoryLocationName: $location, repositoryName: $repository,
                                 sensorName: "analytics_automation_sensor"}) {
    ... on Sensor { sensorState { ticks(limit: 20) { timestamp status runIds error { message } } } }
  }
}
"""
INSTIGATOR_STATES = """
{ repositoriesOrError { ... on RepositoryConnection { nodes {
    sensors { name sensorState { id status } }
    schedules { name scheduleState { id status } }
} } } }
"""
STOP_SENSOR = "mutation Stop($id: String!) { stopSensor(id: $id) { __typename } }"
STOP_SCHEDULE = "mutation Stop($id: String!) { stopRunningSchedule(id: $id) { __typename } }"
STOP_ATTEMPTS = 5
HOURLY_SCHEDULE = "hourly_dbt_tables_job_schedule"
# The clock tick these tests must not cross: the daily cron (the sensor would request every
# seed and table) within a server's life. The hourly schedule's tick needs no wait: on a fresh
# instance it skips, its views missing (test_a_fresh_dev_server_left_across_the_hour_launches_
# nothing), and each test stops the schedule before it builds anything.
DAILY_TICK_UTC = dt.time(6, 0)
SERVER_LIFE = dt.timedelta(minutes=15)


def wait_until_clear_of_clock_ticks() -> None:
    """Start a server only where its life cannot span the daily tick; most of the time this
    waits for nothing."""
    now = dt.datetime.now(dt.UTC)
    daily = dt.datetime.combine(now.date(), DAILY_TICK_UTC, tzinfo=dt.UTC)
    daily += dt.timedelta(days=1) if daily <= now else dt.timedelta()
    if daily - now < SERVER_LIFE:
        print(f"waiting for the {daily:%H:%M} UTC tick to pass")
        time.sleep((daily - now).total_seconds() + 30)


def stop_the_hourly_schedule(server: Any) -> None:
    """Pin the clock: from here on only the sensor and the tests launch runs."""
    stop_for_good(server, {HOURLY_SCHEDULE})


def stop_for_good(server: Any, names: set[str] | None = None) -> None:
    """Stop the sensors and schedules named (all of them if None) on `server` (anything with a
    `graphql` method), and see them stay stopped. Dagster's daemons write back the state they
    read as a tick began (a sensor's at every tick, a schedule's at its first and then hourly),
    so a stop that lands during one is undone (seen under load: the sensor, stopped once, went
    on and launched a run beside a test's). So stop what runs, and look again two sensor
    intervals later."""
    for _ in range(STOP_ATTEMPTS):
        (repo,) = server.graphql(INSTIGATOR_STATES)["repositoriesOrError"]["nodes"]
        running = [
            (mutation, instigator[state]["id"])
            for mutation, kind, state in (
                (STOP_SENSOR, "sensors", "sensorState"),
                (STOP_SCHEDULE, "schedules", "scheduleState"),
            )
            for instigator in repo[kind]
            if (names is None or instigator["name"] in names)
            and instigator[state]["status"] == "RUNNING"
        ]
        if not running:
            return
        for mutation, state_id in running:
            server.graphql(mutation, id=state_id)
        time.sleep(2 * SENSOR_INTERVAL_SECONDS)
    raise AssertionError(f"still running after {STOP_ATTEMPTS} stops: {repo}")


def wait_for_sensor_ticks(server: DevServer, count: int, since: float) -> None:
    wait_for(
        f"{count} sensor ticks",
        lambda: sensor_ticks_since(server, since) >= count,
        RUN_SECONDS,
    )


def sensor_ticks_since(server: DevServer, since: float) -> int:
    ticks = sensor_ticks(server)
    return sum(tick["timestamp"] > since for tick in ticks if tick["status"] != "STARTED")


def sensor_ticks(server: DevServer) -> list[dict]:
    """The automation sensor's last 20 ticks, newest first."""
    repo = repository(server)
    return server.graphql(SENSOR_TICKS, location=repo["location"]["name"], repository=repo["name"])[
        "sensorOrError"
    ]["sensorState"]["ticks"]


def launched_by(run: dict[str, Any]) -> str:
    tags = {tag["key"]: tag["value"] for tag in run["tags"]}
    if launched_by_automation(run):
        return "automation"
    if "dagster/schedule_name" in tags:
        return f"schedule {tags['dagster/schedule_name']}"
    return "by hand"


def timeline(server: DevServer) -> str:
    """Every run and the sensor's last ticks in time order, for a failure's message: when,
    who (automation, the schedule, by hand), what it built, and how it ended."""
    rows = [
        (run["creationTime"], f"run {run['runId'][:8]} {launched_by(run)} "
                              f"{sorted(asset_names(run))} {run['status']}")
        for run in runs(server)
    ] + [
        (tick["timestamp"], f"sensor tick {tick['status']} "
                            f"launched {[run_id[:8] for run_id in tick['runIds']]}"
                            + (f": {tick['error']['message'].strip()}" if tick["error"] else ""))
        for tick in sensor_ticks(server)
    ]  # fmt: skip
    return "\n".join(
        f"{dt.datetime.fromtimestamp(when, dt.UTC):%H:%M:%S}  {what}" for when, what in sorted(rows)
    )


def repository(server: DevServer) -> dict:
    (repo,) = server.graphql(INSTIGATORS)["repositoriesOrError"]["nodes"]
    return repo


def finished(server: DevServer, run_id: str) -> str | None:
    (run,) = [run for run in runs(server) if run["runId"] == run_id]
    return run["status"] if run["status"] in {"SUCCESS", "FAILURE", "CANCELED"} else None


def automation_runs(server: DevServer) -> list[dict]:
    return [run for run in runs(server) if launched_by_automation(run)]


def new_automation_runs(server: DevServer, before: int) -> list[dict]:
    found = automation_runs(server)  # newest first
    return found[: len(found) - before]


def expect_one_automation_run_of(server: DevServer, before: int, assets: set[str]) -> None:
    """Exactly one new automation run, of exactly `assets`; it succeeds; nothing follows it."""
    launched = wait_for(
        "the automation sensor to launch a run",
        lambda: new_automation_runs(server, before),
        RUN_SECONDS,
    )
    assert [asset_names(run) for run in launched] == [assets], timeline(server)
    status = wait_for("the run to finish", lambda: finished(server, launched[0]["runId"]),
                      RUN_SECONDS)  # fmt: skip
    assert status == "SUCCESS", timeline(server)
    wait_for_sensor_ticks(server, 3, since=time.time())  # and nothing else follows
    found = [asset_names(later) for later in new_automation_runs(server, before)]
    assert found == [assets], timeline(server)
