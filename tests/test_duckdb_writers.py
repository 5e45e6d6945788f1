"""One writer at a time on the DuckDB file: concurrent runs queue, and a run waits for a process
that still holds the file instead of failing on its lock."""

import os
import subprocess
import sys
import threading
import time
from typing import IO

import dagster as dg
import duckdb

from harness import copy_dagster_project, copy_dbt_project, project_env

# Holds the database file open (DuckDB's write lock) until a line arrives on its stdin.
HOLD_THE_FILE_UNTIL_TOLD = """
import sys, duckdb
connection = duckdb.connect(sys.argv[1])
print("held", flush=True)
sys.stdin.readline()
connection.close()
"""
# Longer than dbt's first retries (1, 2 and 4 s), shorter than all of them (63 s).
HOLD_SECONDS = 10


def dbt_errors(output: str) -> list[str]:
    """The lines dagster-dbt parsed from dbt's log as errors: what a failed run died of."""
    lines = output.splitlines()
    return [
        line
        for start, heading in enumerate(lines)
        if heading.startswith("Errors parsed from dbt logs")
        for line in lines[start + 1 : start + 4]
        if line.strip()
    ] or lines[-5:]


def test_three_simultaneous_materializations_all_succeed_one_after_another(tmp_path):
    project = copy_dagster_project(tmp_path / "project")
    env = project_env(project)
    subprocess.run(["dg", "utils", "refresh-defs-state"], cwd=project, env=env, check=True)

    # `dagster asset materialize` loads the stored state; three `dg launch` would each refresh
    # it (dbt parse and a copy into .local_defs_state) at the same moment and race on it.
    materialize_all = [
        "dagster", "asset", "materialize", "--select", "*", "-m", "dbt_automation_demo.definitions"
    ]  # fmt: skip
    launches = [
        subprocess.Popen(
            materialize_all,
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [launch.communicate(timeout=600)[0] for launch in launches]

    failures = [
        dbt_errors(output)
        for launch, output in zip(launches, outputs, strict=True)
        if launch.returncode
    ]
    assert failures == []
    assert not any("Could not set lock" in output for output in outputs)
    # Two of them waited for the DuckDB writer slot instead of failing on the file's lock.
    waited = ["Step blocked by limit for pool analytics_duckdb" in output for output in outputs]
    assert sorted(waited) == [False, True, True]
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
    assert [run.status for run in runs] == [dg.DagsterRunStatus.SUCCESS] * 3
    with duckdb.connect(env["DBT_DUCKDB_PATH"], read_only=True) as con:
        assert con.execute("select count(*) from customer_segments").fetchone() == (100,)


def test_dbt_waits_for_a_process_that_still_holds_the_warehouse_file(tmp_path):
    project = copy_dbt_project(tmp_path / "analytics_dbt")
    warehouse = tmp_path / "analytics.duckdb"
    duckdb.connect(str(warehouse)).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_FILE_UNTIL_TOLD, str(warehouse)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline() == "held\n"

    build = subprocess.Popen(
        ["dbt", "build", "--project-dir", project, "--profiles-dir", project],
        cwd=project,
        env={**os.environ, "DBT_DUCKDB_PATH": str(warehouse)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[tuple[float, str]] = []  # each line of dbt's output with the moment it came
    connecting = threading.Event()
    reader = threading.Thread(target=read_lines, args=(build.stdout, lines, connecting))
    reader.start()
    assert connecting.wait(timeout=180)  # dbt opens the database right after "Concurrency:"
    time.sleep(HOLD_SECONDS)
    # The file is held at least until this moment; a model may start any time after it.
    release_requested_at = time.monotonic()
    holder.communicate("release\n", timeout=30)
    build.wait(timeout=180)
    reader.join()

    output = "".join(line for _, line in lines)
    assert build.returncode == 0, output
    # No model started while the other process held the file: dbt waited for it.
    first_model_started_at = next(at for at, line in lines if " START " in line)
    assert first_model_started_at > release_requested_at
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("select count(*) from customer_segments").fetchone() == (100,)


def read_lines(stream: IO[str], lines: list[tuple[float, str]], connecting: threading.Event):
    for line in stream:
        lines.append((time.monotonic(), line))
        if "Concurrency:" in line:
            connecting.set()
