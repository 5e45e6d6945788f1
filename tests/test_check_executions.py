"""The latest execution of many checks read at once (`internals/check_executions.py`), which the
policies' signatures and the scheduled job's parent check read: exactly the checks asked, however
many queries it takes."""

import dagster as dg
import pytest

from dbt_automation_demo.internals import check_executions
from harness import report_check_result, sqlite_instance, start_recorded_run

A_X = dg.AssetCheckKey(dg.AssetKey("a"), "x")
B_Y = dg.AssetCheckKey(dg.AssetKey("b"), "y")
A_Y = dg.AssetCheckKey(dg.AssetKey("a"), "y")  # not asked for, though named like B_Y


@pytest.mark.parametrize("checks_per_query", [1, check_executions.CHECKS_PER_QUERY])
def test_the_latest_execution_of_exactly_the_checks_asked(tmp_path, monkeypatch, checks_per_query):
    monkeypatch.setattr(check_executions, "CHECKS_PER_QUERY", checks_per_query)
    with sqlite_instance(tmp_path / "home") as instance:
        first = start_recorded_run(instance, ["a", "b"], [A_X, B_Y, A_Y])
        for check in (A_X, B_Y, A_Y):
            report_check_result(instance, first, check, passed=True)
        second = start_recorded_run(instance, ["a"], [A_X])
        report_check_result(instance, second, A_X, passed=False)
        latest = check_executions.latest_check_executions(instance, [A_X, B_Y])
    assert {check: (record.run_id, record.status.value) for check, record in latest.items()} == {
        A_X: (second.run_id, "FAILED"),
        B_Y: (first.run_id, "SUCCEEDED"),
    }
