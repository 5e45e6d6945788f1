"""The README's other sessions: `nox -s reset` and `nox -s demo` do what the README says."""

import re
import shutil
import subprocess
import sys

import pytest

from harness import REPO_ROOT


def test_reset_removes_the_duckdb_file_and_the_instance_and_nothing_else(tmp_path):
    for kept in ("noxfile.py", "dagster_home/dagster.yaml",
                 "dagster_home/.gitignore", "analytics_dbt/data/.gitignore"):  # fmt: skip
        (tmp_path / kept).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / kept, tmp_path / kept)
    generated = [
        "analytics_dbt/data/analytics.duckdb",
        "dagster_home/history/runs.db",
        "dagster_home/storage/run/compute_logs.txt",
        "dagster_home/schedules/s.db",
    ]
    for path in generated:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("state")
    (tmp_path / "analytics_dbt" / "data" / "notes.txt").write_text("mine")

    subprocess.run(["nox", "-s", "reset"], cwd=tmp_path, check=True, capture_output=True)

    left = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file())
    assert left == ["analytics_dbt/data/.gitignore",
                    "analytics_dbt/data/notes.txt", "dagster_home/.gitignore",
                    "dagster_home/dagster.yaml", "noxfile.py"]  # fmt: skip


STATUS_TEST = (
    "accepted_values_stg_orders_status__placed__shipped__completed__return_pending__returned"
)


@pytest.mark.usefixtures("dbt_from_a_preloaded_process")
def test_demo_prints_the_timeline_of_the_walkthroughs():
    demo = subprocess.run(
        [sys.executable, "-m", "dbt_automation_demo.demo"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr[-5000:]
    everything = ("customer_orders, customer_segments, order_summary, raw_customers, raw_orders, "
                  "stg_customers, stg_orders")  # fmt: skip
    ticks = [line.split("tick   requested: ")[1] for line in demo.stdout.splitlines()
             if "tick   requested: " in line]  # fmt: skip
    assert ticks == [
        "nothing",  # 05:00, a fresh instance
        everything,  # 06:00, the daily tick
        "nothing",
        "stg_customers",  # a seed was materialized
        "nothing",
        "stg_customers",  # its SQL was edited
        "nothing",
        everything,  # daily_cron set to every two minutes in defs.yaml
        "nothing",
        everything.replace(" order_summary,", ""),  # order_summary still running
        "nothing",
        everything,
        "nothing",  # the daily cron back, the marts every two minutes
        "stg_orders",  # bad orders landed; its test fails
        "customer_segments",  # due; the marts over stg_orders wait
        "nothing",
        "customer_orders, customer_segments, order_summary, stg_orders",  # fixed: once
        "nothing",
        "nothing",  # the marts' cron back to daily; stg_payments' source not observed yet
        "stg_payments",  # the first observation: the landing zone's first batch
        "stg_payments",  # a batch landed and was observed
        "nothing",  # observed again, no new data
        "nothing",  # reuse, a 10-minute lag tolerance: new data, 8 minutes after its build
        "stg_payments",  # 11 minutes after
        "nothing",  # new data every 3 minutes: within the tolerance
        "nothing",
        "nothing",
        "stg_payments",  # nothing landed since, but the last landing is not built yet
        "nothing",
    ]
    observed = [line.split("observe ")[1] for line in demo.stdout.splitlines()
                if "  observe " in line]  # fmt: skip
    assert [line.split(";")[0] for line in observed] == [
        "landing/payments: new data",
        "landing/payments: new data",
        "landing/payments: no new data",
        *["landing/payments: new data"] * 5,  # every three minutes
    ]
    assert "why    stg_payments waits: landing/payments: not observed with data yet" in demo.stdout
    tolerance = "new data, within its lag tolerance (10 min) of its last build"
    assert demo.stdout.count(f"why    stg_payments waits: stg_payments: {tolerance}") == 4
    (failed,) = [line for line in demo.stdout.splitlines() if "FAILED" in line]
    assert failed.endswith(f"dbt build stg_orders: FAILED: stg_orders' test {STATUS_TEST} failed")
    assert f"why    customer_orders waits: stg_orders: blocking check {STATUS_TEST} failed" in (
        demo.stdout
    )
    # Nothing but the timeline: headings, blank lines and "Wed 06:00  what happened" lines (no
    # warnings from the libraries between them).
    timeline = re.compile(r"== .+|[A-Z][a-z]{2} \d\d:\d\d  +\S.*|")
    assert [line for line in demo.stdout.splitlines() if not timeline.fullmatch(line)] == []
    assert demo.stderr == ""


def test_fuzz_prints_its_seed_and_the_command_that_replays_it():
    # In this venv (`--no-venv`): a venv of its own would compile its 7,161 files of bytecode
    # here, within the README's command; CI's fuzz step runs the session with its install.
    fuzz = subprocess.run(
        ["nox", "--no-venv", "-s", "fuzz", "--", "--examples", "2", "--seed", "7"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    output = fuzz.stdout + fuzz.stderr
    assert fuzz.returncode == 0, output[-5000:]
    assert "seed 7; replay: nox -s fuzz -- --examples 2 --seed 7" in output
    assert "PolicyInterleavings: 2 sequences" in output
    # The random machine, the one with real dbt runs, and reuse's property.
    assert "3 passed" in output
