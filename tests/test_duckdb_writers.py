"""dbt waits for a process that still holds the DuckDB file instead of failing on its lock (the
run queue keeps Dagster's own runs apart: tests/test_duckdb_writer_faults.py)."""

import os
import subprocess
import sys
import threading
import time
from typing import IO

import duckdb

from harness import copy_dbt_project

# Holds the database file open (DuckDB's write lock) until a line arrives on its stdin.
HOLD_THE_FILE_UNTIL_TOLD = """
import sys, duckdb
connection = duckdb.connect(sys.argv[1])
print("held", flush=True)
sys.stdin.readline()
connection.close()
"""
# Longer than dbt's first retries (1, 2 and 4 s), shorter than all of them (127 s).
HOLD_SECONDS = 10
OPENING = "Opening a new connection"  # dbt's debug log, just before the adapter opens the file


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
        ["dbt", "--debug", "build", "--project-dir", project, "--profiles-dir", project],
        cwd=project,
        env={**os.environ, "DBT_DUCKDB_PATH": str(warehouse)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[tuple[float, str]] = []  # each line of dbt's output with the moment it came
    opening = threading.Event()
    reader = threading.Thread(target=read_lines, args=(build.stdout, lines, opening))
    reader.start()
    assert opening.wait(timeout=180)
    time.sleep(HOLD_SECONDS)
    # The file is held at least until this moment; a model may start any time after it.
    release_requested_at = time.monotonic()
    holder.communicate("release\n", timeout=30)
    build.wait(timeout=180)
    reader.join()

    output = "".join(line for _, line in lines)
    assert build.returncode == 0, output
    # dbt began opening the file while it was held (DuckDB refuses a held file at once), and no
    # model started until it was released: dbt tried again, and waited for it.
    first_open_at = next(at for at, line in lines if OPENING in line)
    first_model_started_at = next(at for at, line in lines if " START " in line)
    assert first_open_at < release_requested_at < first_model_started_at
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("select count(*) from customer_segments").fetchone() == (100,)


def read_lines(stream: IO[str], lines: list[tuple[float, str]], opening: threading.Event):
    for line in stream:
        lines.append((time.monotonic(), line))
        if OPENING in line:
            opening.set()
