"""The scenario modules' `dbt` (tests/preloaded_dbt.py) is dbt: the same output and exit code as
the `dbt` executable, for a command that succeeds and for one that fails."""

import json
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from harness import copy_dbt_project

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
