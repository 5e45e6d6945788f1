"""Tables, seeds and every other non-view: once per daily tick, never while running."""

from datetime import timedelta

import pytest

from harness import (
    ALL_ASSETS,
    DAILY_TICK,
    EDGES,
    SEEDS,
    TABLES,
    VIEWS,
    build_defs,
    edit_sql,
    end_run,
    materialize,
    names,
    observe,
    project_over_a_dbt_source,
    ready,
    reload_defs,
    start_run,
    the_sensors_run_requests,
)

# Every test that uses an instance runs on SQLite and on PostgreSQL (conftest).
pytestmark = [
    pytest.mark.both_storages,
    pytest.mark.usefixtures("dbt_from_a_preloaded_process"),  # tests/preloaded_dbt.py
]

HOUR = timedelta(hours=1)
BOTH_SOURCES_HAVE_DATA = {"shop/external_refunds": None, "landing/payments": None}


def test_nothing_before_the_daily_tick_then_everything_once(
    dbt_project, built_instance, before_daily_tick
):
    _, ticker = ready(dbt_project, built_instance, before_daily_tick)
    assert ticker.tick_at(before_daily_tick.replace(minute=59)) == set()
    # Seeds and tables are due; the views between them follow their seeds in the same tick.
    assert ticker.tick() == SEEDS | VIEWS | TABLES  # 06:00
    assert ticker.tick() == set()


def test_each_table_refreshes_once_a_day_whatever_happens_upstream(
    dbt_project, built_instance, before_daily_tick
):
    defs, ticker = ready(dbt_project, built_instance, before_daily_tick)
    assert ticker.tick(after=HOUR) == DAILY_TICK  # 06:02
    materialize(defs, built_instance, ALL_ASSETS)
    assert ticker.tick() == set()

    materialize(defs, built_instance, ["raw_orders"])
    assert ticker.tick(after=4 * HOUR) == {"stg_orders"}  # 10:01: the view, no table
    materialize(defs, built_instance, ["stg_orders"])
    assert [ticker.tick(after=5 * HOUR) for _ in range(3)] == [set(), set(), set()]  # to 01:01

    assert ticker.tick_at(before_daily_tick + timedelta(days=1, hours=1)) == DAILY_TICK


def test_daily_tick_builds_downstream_tables_after_upstream_ones_in_one_run(
    dbt_project, built_instance, before_daily_tick
):
    defs, ticker = ready(dbt_project, built_instance, before_daily_tick)
    assert ticker.tick(after=HOUR) == DAILY_TICK
    # The sensor turns the tick's requests into runs with Dagster's own grouping: one run.
    (run_request,) = the_sensors_run_requests(ticker)
    assert names(run_request.asset_selection) == DAILY_TICK

    result = materialize(defs, built_instance, names(run_request.asset_selection))
    order = [
        event.asset_key.to_user_string() for event in result.get_asset_materialization_events()
    ]
    assert sorted(order) == sorted(DAILY_TICK)  # each once
    assert all(
        order.index(parent) < order.index(child)
        for parent, child in EDGES
        if {parent, child} <= DAILY_TICK
    )


def test_table_waits_for_an_upstream_table_still_running_at_the_tick(
    dbt_project, built_instance, before_daily_tick
):
    defs, ticker = ready(dbt_project, built_instance, before_daily_tick)
    running = start_run(defs, built_instance, ["customer_orders"])
    # customer_orders' own run counts for today; customer_segments waits for it.
    assert ticker.tick(after=HOUR) == DAILY_TICK - {"customer_orders", "customer_segments"}
    assert ticker.tick() == set()

    materialize(defs, built_instance, ["customer_orders"])
    end_run(built_instance, running)
    assert ticker.tick() == {"customer_segments"}
    assert ticker.tick() == set()


def test_table_running_at_the_tick_is_not_requested_again_that_day(
    dbt_project, built_instance, before_daily_tick
):
    defs, ticker = ready(dbt_project, built_instance, before_daily_tick)
    running = start_run(defs, built_instance, ["order_summary"])
    assert ticker.tick(after=HOUR) == DAILY_TICK - {"order_summary"}
    assert [ticker.tick() for _ in range(2)] == [set(), set()]

    end_run(built_instance, running)
    assert [ticker.tick(after=3 * HOUR) for _ in range(5)] == [set()] * 5  # to 21:02


def test_cron_tick_right_after_a_tables_request_requests_it_again(
    dbt_project, built_instance, before_daily_tick
):
    defs, ticker = ready(dbt_project, built_instance, before_daily_tick)  # 05:02
    ticker.defs = build_defs(dbt_project, cron_by_path={"marts": "*/15 * * * *"})
    at = before_daily_tick.replace
    assert ticker.tick_at(at(minute=14)) == set()
    running = start_run(defs, built_instance, ["stg_orders"])
    # 05:15 passed: customer_orders and order_summary wait for stg_orders; customer_segments
    # reads customer_orders only, which is not running.
    assert ticker.tick_at(at(minute=15, second=30)) == {"customer_segments"}
    materialize(defs, built_instance, ["stg_orders"])
    end_run(built_instance, running)
    assert ticker.tick_at(at(minute=29, second=30)) == {"customer_orders", "order_summary"}
    materialize(defs, built_instance, ["customer_orders", "order_summary"])
    # 05:30 passed before the next evaluation: every mart is due again, the two requested at
    # 05:29:30 too.
    assert ticker.tick_at(at(minute=30, second=30)) == {
        "customer_orders",
        "customer_segments",
        "order_summary",
    }
    assert ticker.tick_at(at(minute=31, second=30)) == set()


def test_table_below_a_dbt_source_still_refreshes_daily(
    tmp_path, duckdb_file, instance, before_daily_tick
):
    """Once the source (a DuckDB table) has been observed with data; it is observed again,
    with the same data, before the next day's tick."""
    project = project_over_a_dbt_source(tmp_path / "with_source", duckdb_file)
    _, ticker = ready(project, instance, before_daily_tick)
    assert observe(ticker.defs, instance) == BOTH_SOURCES_HAVE_DATA
    # The first observation of the shipped landing zone brings its view too.
    assert ticker.tick(after=HOUR) == ALL_ASSETS | {"refund_totals"}
    assert ticker.tick() == set()
    assert observe(ticker.defs, instance) == BOTH_SOURCES_HAVE_DATA
    assert [ticker.tick(after=2 * HOUR) for _ in range(11)] == [set()] * 11
    assert ticker.tick(after=2 * HOUR) == DAILY_TICK | {"refund_totals"}


def test_failed_table_run_is_not_retried_before_the_next_daily_tick(
    dbt_project, built_instance, before_daily_tick
):
    _, ticker = ready(dbt_project, built_instance, before_daily_tick)
    edit_sql(dbt_project, "order_summary", "select no_such_column from {{ ref('stg_orders') }}\n")
    ticker.defs = reload_defs(dbt_project)
    assert ticker.tick(after=HOUR) == DAILY_TICK
    result = materialize(ticker.defs, built_instance, ["order_summary"], raise_on_error=False)
    assert not result.success
    assert [ticker.tick(after=2 * HOUR) for _ in range(8)] == [set()] * 8  # to 22:01

    assert "order_summary" in ticker.tick_at(before_daily_tick + timedelta(days=1, hours=1))
