"""dbt's tests hold automation back across runs: nothing is requested on top of a parent whose
error-severity test failed, and what waits (an update, an edit, a cron tick, a table dbt
skipped) is requested once the parent passes again; warn-severity tests never block."""

import asyncio
import shutil
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView
from dagster._core.definitions.freshness import FreshnessState
from dagster._core.definitions.freshness_evaluator import FRESHNESS_EVALUATORS_BY_POLICY_TYPE
from dagster._core.test_utils import freeze_time

from harness import (
    SHIPPED_DBT_PROJECT,
    TABLES,
    materialize,
    ready,
    reload_defs,
)

pytestmark = pytest.mark.both_storages

BAD_ORDERS = SHIPPED_DBT_PROJECT / "demo_data" / "raw_orders_bad.csv"
STATUS_TEST = (
    "accepted_values_stg_orders_status__placed__shipped__completed__return_pending__returned"
)
ORDERS_MARTS = {"customer_orders", "order_summary"}  # the marts that read stg_orders
HOURLY_MARTS = {"cron_by_path": {"marts": "0 * * * *"}}  # the marts hourly, the seeds daily


def land_orders(project, good: bool) -> None:
    source = SHIPPED_DBT_PROJECT / "seeds" / "raw_orders.csv" if good else BAD_ORDERS
    shutil.copy(source, project / "seeds" / "raw_orders.csv")


def orders_landed_and_tested(defs, instance, project, good: bool) -> None:
    """New orders land and one run builds the seed and stg_orders, with their tests."""
    land_orders(project, good)
    result = materialize(defs, instance, ["raw_orders", "stg_orders"], raise_on_error=False)
    assert result.success == good


def freshness(defs, instance, asset: str, at: datetime) -> FreshnessState:
    """The asset's freshness at a time, as Dagster's freshness daemon evaluates it."""
    with freeze_time(at):
        view = AssetGraphView.for_test(defs, instance)
        node = view.asset_graph.get(dg.AssetKey(asset))
        if node.freshness_policy is None:
            return FreshnessState.NOT_APPLICABLE
        evaluator = FRESHNESS_EVALUATORS_BY_POLICY_TYPE[type(node.freshness_policy)]()
        return asyncio.run(evaluator.evaluate_freshness(context=view, node=node))


def node_names(evaluation, asset: str) -> list[str]:
    """Every node's name and label in the asset's evaluation, depth first."""
    result = next(r for r in evaluation.results if r.key.to_user_string() == asset)
    names, pending = [], [result]
    while pending:
        node = pending.pop()
        names += [node.condition.name, node.condition.get_label() or ""]
        pending.extend(node.child_results)
    return names


def test_tables_wait_while_a_parent_fails_a_blocking_check_and_run_once_it_passes(
    dbt_project, built_instance, after_daily_tick
):
    defs, ticker = ready(dbt_project, built_instance, after_daily_tick)
    ticker.defs = defs = reload_defs(dbt_project, **HOURLY_MARTS)
    orders_landed_and_tested(defs, built_instance, dbt_project, good=False)
    assert ticker.tick() == set()

    # 10:00: the marts are due; those over stg_orders wait, customer_segments does not (its
    # parent customer_orders holds the last good data).
    assert ticker.tick_at(after_daily_tick.replace(hour=10, minute=0, second=30)) == {
        "customer_segments"
    }
    assert ticker.tick() == set()
    waiting = node_names(ticker.last_evaluation, "customer_orders")
    assert "parent's blocking check failed, or its last run" in waiting
    assert f"stg_orders: blocking check {STATUS_TEST} failed" in waiting

    orders_landed_and_tested(defs, built_instance, dbt_project, good=True)
    assert ticker.tick() == ORDERS_MARTS  # the 10:00 tick waited; it was not lost
    assert ticker.tick() == set()


def test_a_view_waits_while_its_parent_seed_fails_a_blocking_check(
    dbt_project, built_instance, after_daily_tick
):
    defs, ticker = ready(dbt_project, built_instance, after_daily_tick)
    orders = dbt_project / "seeds" / "raw_orders.csv"
    good = orders.read_text()
    orders.write_text(good + good.splitlines()[-1] + "\n")  # the last order twice: not unique
    assert not materialize(defs, built_instance, ["raw_orders"], raise_on_error=False).success
    assert ticker.tick() == set()
    assert ticker.tick() == set()

    orders.write_text(good)
    materialize(defs, built_instance, ["raw_orders"])
    assert ticker.tick() == {"stg_orders"}  # once, for both updates
    assert ticker.tick() == set()


def test_a_parent_requested_on_the_same_tick_is_retested_in_the_same_run(
    dbt_project, built_instance, before_daily_tick
):
    """The daily tick requests the seeds, so the views and marts come with them in one run,
    whatever the views' last tests said: dbt build tests them again first."""
    defs, ticker = ready(dbt_project, built_instance, before_daily_tick)
    orders_landed_and_tested(defs, built_instance, dbt_project, good=False)
    land_orders(dbt_project, good=True)
    assert ticker.tick_at(before_daily_tick.replace(hour=6, minute=0, second=30)) == {
        "raw_customers", "raw_orders", "stg_customers", "stg_orders", *TABLES,
    }  # fmt: skip


def test_a_table_dbt_skipped_after_a_failed_test_stays_due_and_runs_once_the_parent_passes(
    dbt_project, built_instance, before_daily_tick
):
    defs, ticker = ready(dbt_project, built_instance, before_daily_tick)
    land_orders(dbt_project, good=False)
    requested = ticker.tick_at(before_daily_tick.replace(hour=6, minute=0, second=30))
    assert requested == {"raw_customers", "raw_orders", "stg_customers", "stg_orders", *TABLES}
    # The 06:00 run: stg_orders fails its test, so dbt skips every mart below it.
    assert not materialize(defs, built_instance, requested, raise_on_error=False).success
    assert [ticker.tick() for _ in range(3)] == [set(), set(), set()]
    # Held back, the marts are overdue once 06:30 (the tick and 30 minutes' grace) has passed.
    overdue_at = before_daily_tick.replace(hour=6, minute=31)
    assert freshness(defs, built_instance, "customer_orders", overdue_at) == FreshnessState.FAIL
    assert freshness(defs, built_instance, "stg_orders", overdue_at) == (
        FreshnessState.NOT_APPLICABLE  # a view has no cron, so no freshness policy
    )

    # 10:00: the data is fixed; the marts do not wait for tomorrow.
    ticker.now = before_daily_tick.replace(hour=10)
    orders_landed_and_tested(defs, built_instance, dbt_project, good=True)
    assert ticker.tick() == TABLES  # one run, in dbt's order
    materialize(defs, built_instance, TABLES)
    assert [ticker.tick() for _ in range(2)] == [set(), set()]
    # Rebuilt (the instance records real times), it is fresh again.
    just_after = datetime.now(UTC) + timedelta(minutes=1)
    assert freshness(defs, built_instance, "customer_orders", just_after) == FreshnessState.PASS


def test_a_warn_severity_test_never_holds_anything_back(
    dbt_project, built_instance, after_daily_tick
):
    schema = dbt_project / "models" / "staging" / "schema.yml"
    schema.write_text(
        schema.read_text().replace(
            "values: [placed, shipped, completed, return_pending, returned]",
            "values: [placed, shipped, completed, return_pending, returned]\n"
            "              config:\n                severity: warn",
        )
    )
    _, ticker = ready(dbt_project, built_instance, after_daily_tick)
    ticker.defs = defs = reload_defs(dbt_project, **HOURLY_MARTS)
    land_orders(dbt_project, good=False)
    assert materialize(defs, built_instance, ["raw_orders", "stg_orders"]).success
    assert ticker.tick_at(after_daily_tick.replace(hour=10, minute=0, second=30)) == TABLES


def test_a_table_that_failed_on_its_own_is_not_retried_when_its_parent_is_fixed(
    dbt_project, built_instance, after_daily_tick
):
    """Only assets dbt skipped stay due; a failing one waits for its next cron tick."""
    defs, ticker = ready(dbt_project, built_instance, after_daily_tick)
    sql = dbt_project / "models" / "marts" / "order_summary.sql"
    good = sql.read_text()
    sql.write_text(good.replace("count(*) as order_count", "count(no_such_column) as order_count"))
    ticker.defs = defs = reload_defs(dbt_project, **HOURLY_MARTS)
    assert ticker.tick_at(after_daily_tick.replace(hour=10, minute=0, second=30)) == TABLES
    assert not materialize(defs, built_instance, TABLES, raise_on_error=False).success
    assert [ticker.tick(timedelta(minutes=5)) for _ in range(3)] == [set(), set(), set()]
