"""The scenario modules' `dbt` (tests/preloaded_dbt.py) is dbt: the same output and exit code as
the `dbt` executable, for a command that succeeds and for one that fails; and its server does not
outlive a test worker that is killed."""

import json
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import psutil
import pytest

from harness import REPO_ROOT, copy_dbt_project
from preloaded_dbt import PARENT_CHECK_SECONDS

OWN_DBT = shutil.which("dbt", path=sysconfig.get_path("scripts"))


def run(dbt: str, project_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [dbt, *args, "--profiles-dir", str(project_dir), "--log-format", "json"],
        cwd=project_dir,
        capture_output=True,
        text=True,
    )


@pytest.mark.usefixtures("dbt_from_a_preloaded_process")
def test_the_preloaded_dbt_exits_and_reports_as_the_dbt_executable(tmp_path, duckdb_file):
    project_dir = copy_dbt_project(tmp_path / "analytics_dbt")
    duckdb_file.parent.mkdir()
    preloaded = shutil.which("dbt")
    assert preloaded != OWN_DBT
    assert run(OWN_DBT, project_dir, "parse").returncode == 0  # the commands below parse nothing

    for args in (("seed", "--select", "raw_customers"), ("run", "--select", "no_such_model+")):
        real, fork = run(OWN_DBT, project_dir, *args), run(preloaded, project_dir, *args)
        assert fork.returncode == real.returncode, fork.stdout + fork.stderr
        assert event_names(fork.stdout) == event_names(real.stdout)

    (project_dir / "models" / "staging" / "stg_customers.sql").write_text("select nonsense(")
    assert run(OWN_DBT, project_dir, "parse").returncode == 0
    real = run(OWN_DBT, project_dir, "run", "--select", "stg_customers")
    fork = run(preloaded, project_dir, "run", "--select", "stg_customers")
    assert (fork.returncode, real.returncode) == (1, 1)
    assert event_names(fork.stdout) == event_names(real.stdout)


def event_names(json_log: str) -> list[str]:
    """The names of dbt's log events, in order, without the ones that vary between two runs."""
    varying = {"MainReportVersion", "MainReportArgs", "ConcurrencyLine", "CommandCompleted"}
    names = [json.loads(line)["info"]["name"] for line in json_log.splitlines() if line.strip()]
    return [name for name in names if name not in varying]


# A test worker: starts a server, says so, and waits to be killed.
WORKER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
import preloaded_dbt
with preloaded_dbt.running(Path({folder!r})):
    print("serving", flush=True)
    time.sleep(600)
"""


def test_the_server_ends_when_its_test_worker_is_killed(tmp_path):
    script = WORKER.format(tests=str(REPO_ROOT / "tests"), folder=str(tmp_path))
    worker = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline() == "serving\n"
        (server,) = psutil.Process(worker.pid).children()
        assert "preloaded_dbt.py" in " ".join(server.cmdline())
        socket_folder = Path(server.cmdline()[2]).parent  # the server's argument: its socket
        assert socket_folder.is_dir()
        worker.send_signal(signal.SIGKILL)  # no `finally`, no terminate(): as kill -9 does
        worker.wait()
        _, alive = psutil.wait_procs([server], timeout=PARENT_CHECK_SECONDS * 5)
        assert alive == [], f"the server outlived its killed worker: {alive}"
        assert not socket_folder.exists()  # the worker's to remove, had it not been killed
    finally:
        worker.kill()
        worker.wait()
