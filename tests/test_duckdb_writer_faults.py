"""The DuckDB writer under faults, on the real dev server (`nox -s dev`): runs that need the
warehouse wait in the queue with no process, one runs at a time, a run killed with SIGKILL
mid-build ends FAILURE and lets the next one start, and a run cancelled mid-build stops dbt.

The tests share one server and run in order; the cancel test has a second one, whose project has
one more model, slow enough that the cancel lands while dbt builds it. On both, the sensor and
the schedule are stopped first, so the only runs are the ones a test launches.
"""

import itertools
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
import yaml

from harness import (
    ALL_ASSETS,
    REPO_ROOT,
    WHOLE_MARTS,
    copy_dagster_project,
    mart_rows,
    readme_block,
)
from live_server import (
    RUN_TIMES,
    DevServer,
    is_running,
    kill_leftovers,
    launch_run,
    run_processes,
    runs,
    stop_for_good,
    wait_for,
)

pytestmark = pytest.mark.live

RUN_SECONDS = 240
# The code server checks its run workers every 0.5 s and marks a dead one's run FAILURE; the
# queue looks again within DEQUEUE_SECONDS. We promise well under a minute.
RECOVERY_BOUND_SECONDS = 30
# How often Dagster's run queue looks at its queued runs, as the dev instance sets it.
DEQUEUE_SECONDS = yaml.safe_load((REPO_ROOT / "dagster_home" / "dagster.yaml").read_text())[
    "run_queue"
]["dequeue_interval_seconds"]
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
SAMPLE_SECONDS = 0.5

MATERIALIZE_EVERYTHING_FROM_THE_CLI = (
    *("dagster", "asset", "materialize", "--select", "*"),
    *("-m", "dbt_automation_demo.definitions"),
)
TERMINATE = """
mutation Terminate($runId: String!) {
  terminateRun(runId: $runId, terminatePolicy: SAFE_TERMINATE) {
    __typename ... on TerminateRunFailure { message } ... on PythonError { message }
  }
}
"""
MATERIALIZED_BY_RUN = """
query Materialized($runId: ID!) { runOrError(runId: $runId) { ... on Run {
    assetMaterializations { assetKey { path } }
} } }
"""
# Added to the cancel test's project: built after every mart (dbt builds one node at a time
# here), it counts for many minutes, so a cancel lands while dbt is building it.
SLOW_MODEL = """
{{ config(materialized='table') }}
-- depends_on: {{ ref('customer_segments') }}
-- depends_on: {{ ref('order_summary') }}
select count(*) as multiples_of_seven from range(100000000000) where hash(range) % 7 = 0
"""
CANCEL_BOUND_SECONDS = 60  # dbt stops a query at once on SIGINT; dagster-dbt waits up to 25 s


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[DevServer]:
    """A dev server on a fresh SQLite instance with nothing launching runs but the tests."""
    yield from quiet_dev_server(tmp_path_factory.mktemp("writer-faults"))


@pytest.fixture(scope="module")
def server_with_a_slow_model(tmp_path_factory) -> Iterator[DevServer]:
    def add_the_slow_model(project: Path) -> None:
        (project / "analytics_dbt" / "models" / "marts" / "slow_count.sql").write_text(SLOW_MODEL)

    yield from quiet_dev_server(tmp_path_factory.mktemp("writer-cancel"), add_the_slow_model)


def quiet_dev_server(folder: Path, edit=lambda project: None) -> Iterator[DevServer]:
    project = copy_dagster_project(folder / "project")
    edit(project)
    dev = DevServer(project, folder / "dev-server.log").start()
    try:
        stop_for_good(dev)  # the sensor and the schedules
        yield dev
    finally:
        if dev.process.poll() is None:
            dev.stop()
        kill_leftovers(project)


def launch_everything(server: DevServer) -> str:
    """Every asset, named, as the UI's *Materialize all* sends them (not the source, which the
    whole job would observe first)."""
    return launch_run(server, assets=ALL_ASSETS)


def statuses(server: DevServer, run_ids: list[str]) -> list[str]:
    by_id = {run["runId"]: run["status"] for run in runs(server)}
    return [by_id[run_id] for run_id in run_ids]


def all_finished(server: DevServer, run_ids: list[str]) -> bool:
    return set(statuses(server, run_ids)) <= TERMINAL


def warehouse_rows(project: Path) -> dict[str, int]:
    return mart_rows(project / "warehouse" / "analytics.duckdb")


def test_three_runs_submitted_at_once_run_one_after_another_and_wait_without_a_process(server):
    run_ids = [launch_everything(server) for _ in range(3)]
    samples = []  # (when, the runs' statuses, the run processes then)
    while not all_finished(server, run_ids):
        status, processes = statuses(server, run_ids), run_processes(server.project)
        # Timed after reading: a run worker seen here was there by this time, not before it.
        samples.append((time.time(), status, processes))
        time.sleep(SAMPLE_SECONDS)
    assert statuses(server, run_ids) == ["SUCCESS"] * 3
    assert sum("QUEUED" in status for _, status, _ in samples) > len(samples) / 2

    # Never two writers: no sample saw two runs in progress or two dbt builds.
    assert max(sum(s in {"STARTING", "STARTED"} for s in status) for _, status, _ in samples) == 1
    assert max(len(processes.dbt_builds) for _, _, processes in samples) == 1
    # The run storage says the same: each run started after the one before it had ended.
    times = {run["runId"]: run for run in server.graphql(RUN_TIMES)["runsOrError"]["results"]}
    windows = sorted((times[run_id]["startTime"], times[run_id]["endTime"]) for run_id in run_ids)
    assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(windows))
    # Waiting costs nothing: a run's worker process appears only once the run before it has
    # ended (Dagster's multiprocess executor would spin a core on a pool slot while it waited).
    first_seen = {}
    for when, _, processes in samples:
        for pid in processes.run_workers:
            first_seen.setdefault(pid, when)
    assert len(first_seen) == 3
    # A run is one process: its step runs in the run worker, which starts `dbt build` itself.
    assert not [pid for _, _, processes in samples for pid in processes.steps]
    appeared = sorted(first_seen.values())
    assert all(
        appeared_at > previous_end
        for appeared_at, (_, previous_end) in zip(appeared[1:], windows[:-1], strict=True)
    )
    assert warehouse_rows(server.project) == WHOLE_MARTS


@pytest.mark.parametrize("victim", ["run worker", "dbt build"])
def test_a_run_killed_mid_build_fails_and_the_next_queued_run_starts_and_succeeds(server, victim):
    killed_run, next_run = launch_everything(server), launch_everything(server)
    dbt_running = wait_for(
        "the first run's dbt build to start",
        lambda: (now := run_processes(server.project)).dbt_builds and now,
        RUN_SECONDS,
        every=0.2,
    )
    assert statuses(server, [killed_run, next_run]) == ["STARTED", "QUEUED"]
    pid = (dbt_running.run_workers if victim == "run worker" else dbt_running.dbt_builds)[0]
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()

    wait_for(
        "the next run to start",
        lambda: statuses(server, [killed_run, next_run])[1] != "QUEUED",
        RECOVERY_BOUND_SECONDS,
        every=0.2,
    )
    recovered_after = time.monotonic() - killed_at
    print(f"{victim} killed: the next run started {recovered_after:.1f} s later")
    assert statuses(server, [killed_run])[0] == "FAILURE"
    assert recovered_after < RECOVERY_BOUND_SECONDS
    wait_for("the next run to finish", lambda: all_finished(server, [next_run]), RUN_SECONDS)
    assert statuses(server, [killed_run, next_run]) == ["FAILURE", "SUCCESS"]
    # The killed run worker's dbt (orphaned, still writing) finished or gave the file back; a
    # killed dbt's unfinished write is rolled back when DuckDB next opens the file. Either way
    # the next build waited for the file, and the warehouse holds whole tables.
    assert warehouse_rows(server.project) == WHOLE_MARTS


def test_a_run_cancelled_mid_build_stops_dbt_and_records_what_it_built(
    server_with_a_slow_model,
):
    server = server_with_a_slow_model
    cancelled_run = launch_run(server, assets=ALL_ASSETS | {"slow_count"})
    next_run = launch_run(server, assets=ALL_ASSETS)  # queued behind it; all but the slow model
    wait_for(
        "dbt to start building the slow model, after every mart",
        lambda: "START sql table model main.slow_count" in dbt_log(server.project, cancelled_run),
        RUN_SECONDS,
    )
    (dbt,) = run_processes(server.project).dbt_builds
    result = server.graphql(TERMINATE, runId=cancelled_run)
    assert result["terminateRun"]["__typename"] == "TerminateRunSuccess", result
    cancelled_at = time.monotonic()

    wait_for("the run to end", lambda: all_finished(server, [cancelled_run]), CANCEL_BOUND_SECONDS)
    print(f"cancelled: the run ended {time.monotonic() - cancelled_at:.1f} s later")
    assert statuses(server, [cancelled_run]) == ["CANCELED"]
    assert not is_running(dbt)  # stopped, not left to finish its minutes of counting
    wait_for("the next run to finish", lambda: all_finished(server, [next_run]), RUN_SECONDS)
    assert statuses(server, [cancelled_run, next_run]) == ["CANCELED", "SUCCESS"]
    # The history says what happened: every model dbt had finished, and not the one it was
    # building, which left no table, whole or half-written.
    assert materialized_by(server, cancelled_run) == ALL_ASSETS
    assert warehouse_rows(server.project) == WHOLE_MARTS
    assert not [name for name in relations(server.project) if "slow_count" in name]


def dbt_log(project: Path, run_id: str) -> str:
    """What dbt has logged so far in `run_id` (dagster-dbt gives each run a target folder)."""
    logs = list(project.glob(f"**/target/analytics_dbt-{run_id[:7]}-*/dbt.log"))
    return "".join(log.read_text() for log in logs)


def materialized_by(server: DevServer, run_id: str) -> set[str]:
    run = server.graphql(MATERIALIZED_BY_RUN, runId=run_id)["runOrError"]
    return {"/".join(event["assetKey"]["path"]) for event in run["assetMaterializations"]}


def relations(project: Path) -> set[str]:
    with duckdb.connect(str(project / "warehouse" / "analytics.duckdb"), read_only=True) as con:
        found = con.execute("select table_name from information_schema.tables").fetchall()
    return {name for (name,) in found}


def test_a_cli_run_killed_mid_build_holds_the_queue_until_marked_canceled(server):
    """`dagster asset materialize` runs in its own process, outside the queue: nothing watches
    it, so killed it stays STARTED and the queue keeps waiting for it, until someone marks it
    canceled with the README's command."""
    cli = subprocess.Popen(
        MATERIALIZE_EVERYTHING_FROM_THE_CLI,
        cwd=server.project,
        env=server.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(
        "the CLI run's dbt build to start",
        lambda: run_processes(server.project, run_worker=cli.pid).dbt_builds,
        RUN_SECONDS,
        every=0.2,
    )
    cli.kill()
    cli.wait()
    (dead_run,) = [run["runId"] for run in runs(server) if run["status"] == "STARTED"]
    next_run = launch_everything(server)
    time.sleep(3 * DEQUEUE_SECONDS)  # the queue looks three times, and waits for the dead run
    assert statuses(server, [dead_run, next_run]) == ["STARTED", "QUEUED"]

    command = readme_block("cancel-dead-run").replace("RUN_ID", dead_run)
    command = command.replace("http://127.0.0.1:3000", server.url)
    answer = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=True)
    assert json.loads(answer.stdout) == {
        "data": {"terminateRun": {"__typename": "TerminateRunSuccess"}}
    }
    wait_for("the next run to finish", lambda: all_finished(server, [next_run]), RUN_SECONDS)
    assert statuses(server, [dead_run, next_run]) == ["CANCELED", "SUCCESS"]
    assert warehouse_rows(server.project) == WHOLE_MARTS
