"""Three materializations started at the same moment on one DuckDB file: all succeed, in turn."""

import subprocess

import dagster as dg
import duckdb

from harness import copy_dagster_project, project_env


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

    failed = [output for launch, output in zip(launches, outputs, strict=True) if launch.returncode]
    assert failed == []
    assert not any("Could not set lock" in output for output in outputs)
    # Two of them waited for the DuckDB writer slot instead of failing on the file's lock.
    waited = ["Step blocked by limit for pool analytics_duckdb" in output for output in outputs]
    assert sorted(waited) == [False, True, True]
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
    assert [run.status for run in runs] == [dg.DagsterRunStatus.SUCCESS] * 3
    with duckdb.connect(env["DBT_DUCKDB_PATH"], read_only=True) as con:
        assert con.execute("select count(*) from customer_segments").fetchone() == (100,)
