"""dbt's tests hold automation back across runs: nothing is requested on top of a parent whose
error-severity test failed, and what waits (an update, an edit, a cron tick, a table dbt
skipped) is requested once the parent passes again; warn-severity tests never block."""

import shutil
from datetime import timedelta

import pytest
from dagster._core.definitions.freshness import FreshnessState
from dagster._core.test_utils import freeze_time

from harness import (
    DAILY_TICK,
    SHIPPED_DBT_PROJECT,
    TABLES,
    edit_sql,
    freshness,
    materialize,
    names,
    node_names,
    ready,
    reload_defs,
    sql_file,
    the_sensors_run_requests,
    what_the_run_did,
)

pytestmark = [
    pytest.mark.both_storages,
    pytest.mark.usefixtures("dbt_from_a_preloaded_process"),  # tests/preloaded_dbt.py
]

BAD_ORDERS = SHIPPED_DBT_PROJECT / "demo_data" / "raw_orders_bad.csv"
COUNTRY_TEST = "accepted_values_stg_customers_country__DE__FR__GB__NL__US"
STATUS_TEST = (
    "accepted_values_stg_orders_status__placed__shipped__completed__return_pending__returned"
)
ORDERS_MARTS = {"customer_orders", "order_summary"}  # the marts that read stg_orders
PASS, FAIL = FreshnessState.PASS, FreshnessState.FAIL
HOURLY_MARTS = {"cron_by_path": {"marts": "0 * * * *"}}  # the marts hourly, the seeds daily


def land_orders(project, good: bool) -> None:
    source = SHIPPED_DBT_PROJECT / "seeds" / "raw_orders.csv" if good else BAD_ORDERS
    shutil.copy(source, project / "seeds" / "raw_orders.csv")


def orders_landed_and_tested(defs, instance, project, good: bool) -> None:
    """New orders land and one run builds the seed and stg_orders, with their tests."""
    land_orders(project, good)
    result = materialize(defs, instance, ["raw_orders", "stg_orders"], raise_on_error=False)
    assert result.success == good


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
    waiting = node_names(ticker, "customer_orders")
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
    assert ticker.tick_at(before_daily_tick.replace(hour=6, minute=0, second=30)) == DAILY_TICK

    (the_run,) = the_sensors_run_requests(ticker)
    in_order = what_the_run_did(
        materialize(defs, built_instance, names(the_run.asset_selection)).all_events
    )
    retested = in_order.index(f"{STATUS_TEST} passed")
    # The marts that read stg_orders waited for that result, in the same run.
    assert all(in_order.index(f"built {mart}") > retested for mart in ORDERS_MARTS)


def test_a_table_dbt_skipped_after_a_failed_test_stays_due_and_runs_once_the_parent_passes(
    dbt_project, built_instance, before_daily_tick
):
    """Every run here is recorded at its simulated time, which is what freshness reads."""
    defs, ticker = ready(dbt_project, built_instance, before_daily_tick)
    today = before_daily_tick.replace
    with freeze_time(today(hour=6, minute=5) - timedelta(days=1)):
        materialize(defs, built_instance, ["customer_orders"])  # built yesterday
    land_orders(dbt_project, good=False)
    requested = ticker.tick_at(today(hour=6, minute=0, second=30))
    assert requested == DAILY_TICK
    # Today's 06:00 run: stg_orders fails its test, so dbt skips every mart below it.
    with freeze_time(today(hour=6, minute=5)):
        assert not materialize(defs, built_instance, requested, raise_on_error=False).success
    assert [ticker.tick() for _ in range(3)] == [set(), set(), set()]
    # Held back, the marts turn overdue once the tick and 30 minutes' grace have passed; the
    # seeds today's run built are fresh.
    assert freshness(defs, built_instance, "customer_orders", today(hour=6, minute=29)) == PASS
    assert freshness(defs, built_instance, "customer_orders", today(hour=6, minute=31)) == FAIL
    assert freshness(defs, built_instance, "raw_orders", today(hour=6, minute=31)) == PASS
    assert freshness(defs, built_instance, "stg_orders", today(hour=6, minute=31)) == (
        FreshnessState.NOT_APPLICABLE  # a view has no cron, so no freshness policy
    )

    # 10:00: the data is fixed; the marts do not wait for tomorrow.
    ticker.now = today(hour=10)
    with freeze_time(today(hour=10)):
        orders_landed_and_tested(defs, built_instance, dbt_project, good=True)
    assert ticker.tick() == TABLES  # one run, in dbt's order
    with freeze_time(today(hour=10, minute=1)):
        materialize(defs, built_instance, TABLES)
    assert [ticker.tick() for _ in range(2)] == [set(), set()]
    assert freshness(defs, built_instance, "customer_orders", today(hour=10, minute=2)) == PASS


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
    dbt_project, built_instance, before_daily_tick
):
    """In the 06:00 run stg_customers fails its test, so dbt skips the marts over it, and
    order_summary, which does not read it, fails on its own SQL. Once the customers are fixed,
    only what dbt skipped is requested; order_summary waits for its next tick."""
    defs, ticker = ready(dbt_project, built_instance, before_daily_tick)
    customers = dbt_project / "seeds" / "raw_customers.csv"
    good = customers.read_text()
    customers.write_text(good.replace(",DE,", ",XX,", 1))  # a country stg_customers refuses
    edit_sql(dbt_project, "order_summary", "select no_such_column from {{ ref('stg_orders') }}\n")
    ticker.defs = defs = reload_defs(dbt_project)
    requested = ticker.tick_at(before_daily_tick.replace(hour=6, minute=0, second=30))
    assert requested == DAILY_TICK

    in_order = what_the_run_did(
        materialize(defs, built_instance, requested, raise_on_error=False).all_events
    )
    assert f"{COUNTRY_TEST} failed" in in_order
    assert not {f"built {table}" for table in TABLES} & set(in_order)
    assert [ticker.tick() for _ in range(3)] == [set(), set(), set()]

    customers.write_text(good)
    materialize(defs, built_instance, ["raw_customers", "stg_customers"])
    assert ticker.tick() == {"customer_orders", "customer_segments"}  # what dbt skipped
    assert [ticker.tick(timedelta(hours=1)) for _ in range(3)] == [set(), set(), set()]


def test_tables_wait_while_a_parents_latest_run_failed_and_come_with_its_fix(
    dbt_project, built_instance, after_daily_tick
):
    defs, ticker = ready(dbt_project, built_instance, after_daily_tick)
    good = sql_file(dbt_project, "stg_orders").read_text()
    edit_sql(dbt_project, "stg_orders", "select no_such_column from {{ ref('raw_orders') }}\n")
    ticker.defs = defs = reload_defs(dbt_project, **HOURLY_MARTS)
    assert ticker.tick() == {"stg_orders"}  # its SQL changed
    assert not materialize(defs, built_instance, ["stg_orders"], raise_on_error=False).success

    # 10:00: the marts over stg_orders wait; the view's old data is still there, but its
    # latest run failed.
    assert ticker.tick_at(after_daily_tick.replace(hour=10, minute=0, second=30)) == {
        "customer_segments"
    }
    waiting = node_names(ticker, "customer_orders")
    assert "stg_orders: its latest run failed before materializing it" in waiting
    assert ticker.tick() == set()

    edit_sql(dbt_project, "stg_orders", good)
    ticker.defs = defs = reload_defs(dbt_project, **HOURLY_MARTS)
    # The fixed view is requested, and the marts that waited come with it: one run tests it
    # first.
    assert ticker.tick() == {"stg_orders", *ORDERS_MARTS}
    materialize(defs, built_instance, ["stg_orders", *ORDERS_MARTS])
    assert ticker.tick() == set()
