"""Views refresh when their SQL changes or a parent updates: once, never looping, never lost."""

import pytest
from dagster import DagsterRunStatus

from harness import (
    Ticker,
    build_defs,
    edit_logic,
    edit_sql,
    end_run,
    materialize,
    ready,
    reload_defs,
    run_paused_in_its_step,
    start_run,
)

# Every test that uses an instance runs on SQLite and on PostgreSQL (conftest).
pytestmark = [
    pytest.mark.both_storages,
    pytest.mark.usefixtures("dbt_from_a_preloaded_process"),  # tests/preloaded_dbt.py
]


@pytest.mark.every_python  # definitions loaded, a seed run through dbt, the sensor's ticks
def test_seed_update_requests_its_views_once_and_no_table(
    dbt_project, built_instance, after_daily_tick
):
    defs, ticker = ready(dbt_project, built_instance, after_daily_tick)
    materialize(defs, built_instance, ["raw_customers"])
    assert ticker.tick() == {"stg_customers"}
    assert ticker.tick() == set()

    materialize(defs, built_instance, ["raw_orders"])
    assert ticker.tick() == {"stg_orders"}
    assert ticker.tick() == set()


def test_view_own_materialization_never_requests_it_again(
    dbt_project, built_instance, after_daily_tick
):
    defs, ticker = ready(dbt_project, built_instance, after_daily_tick)
    materialize(defs, built_instance, ["stg_orders"])
    assert [ticker.tick() for _ in range(3)] == [set(), set(), set()]


def test_edited_view_sql_requests_that_view_only_once(
    dbt_project, built_instance, after_daily_tick
):
    _, ticker = ready(dbt_project, built_instance, after_daily_tick)
    edit_logic(dbt_project, "stg_customers")
    ticker.defs = reload_defs(dbt_project)
    assert ticker.tick() == {"stg_customers"}
    assert ticker.tick() == set()

    materialize(ticker.defs, built_instance, ["stg_customers"])
    assert [ticker.tick() for _ in range(2)] == [set(), set()]


def test_parent_update_right_after_the_views_request_requests_it_again(
    dbt_project, built_instance, after_daily_tick
):
    defs, ticker = ready(dbt_project, built_instance, after_daily_tick)
    materialize(defs, built_instance, ["raw_customers"])
    assert ticker.tick() == {"stg_customers"}  # T
    materialize(defs, built_instance, ["stg_customers"])  # the requested run builds the view
    materialize(defs, built_instance, ["raw_customers"])  # the seed lands again before T+1
    assert ticker.tick() == {"stg_customers"}  # T+1: the second update is not spent by T
    assert ticker.tick() == set()


def test_sql_edit_right_after_the_views_request_requests_it_again(
    dbt_project, built_instance, after_daily_tick
):
    defs, ticker = ready(dbt_project, built_instance, after_daily_tick)
    materialize(defs, built_instance, ["raw_customers"])
    assert ticker.tick() == {"stg_customers"}  # T
    materialize(defs, built_instance, ["stg_customers"])
    edit_logic(dbt_project, "stg_customers")  # edited and reloaded before T+1
    ticker.defs = reload_defs(dbt_project)
    assert ticker.tick() == {"stg_customers"}  # T+1
    assert ticker.tick() == set()


def test_view_waits_while_it_runs_and_a_parent_update_meanwhile_is_not_lost(
    dbt_project, built_instance, after_daily_tick
):
    defs, ticker = ready(dbt_project, built_instance, after_daily_tick)
    running = start_run(defs, built_instance, ["stg_customers"])
    materialize(defs, built_instance, ["raw_customers"])
    assert ticker.tick() == set()
    assert ticker.tick() == set()

    materialize(defs, built_instance, ["stg_customers"])  # the running view completes ...
    end_run(built_instance, running)  # ... and its run ends
    assert ticker.tick() == {"stg_customers"}
    assert ticker.tick() == set()


def test_parent_update_during_a_view_run_between_two_ticks_is_not_lost(
    dbt_project, built_instance, after_daily_tick
):
    defs, ticker = ready(dbt_project, built_instance, after_daily_tick)
    materialize(defs, built_instance, ["raw_customers"])
    assert ticker.tick() == {"stg_customers"}  # T
    with run_paused_in_its_step(defs, built_instance, ["stg_customers"]) as requested_run:
        materialize(defs, built_instance, ["raw_customers"])  # lands before dbt reads it ...
    # ... and the view's run succeeds after it: its materialization is the latest, yet the
    # update came after the request.
    assert built_instance.get_run_by_id(requested_run.run_id).status == DagsterRunStatus.SUCCESS
    assert ticker.tick() == {"stg_customers"}  # T+1
    assert ticker.tick() == set()


def test_view_built_by_hand_after_a_parent_update_is_requested_once_more(
    dbt_project, built_instance, after_daily_tick
):
    defs, ticker = ready(dbt_project, built_instance, after_daily_tick)
    materialize(defs, built_instance, ["raw_customers"])
    materialize(defs, built_instance, ["stg_customers"])  # only a request spends the update
    assert ticker.tick() == {"stg_customers"}
    assert ticker.tick() == set()


def test_parent_and_view_built_in_one_run_request_nothing(
    dbt_project, built_instance, after_daily_tick
):
    defs, ticker = ready(dbt_project, built_instance, after_daily_tick)
    materialize(defs, built_instance, ["raw_customers", "stg_customers"])
    assert [ticker.tick() for _ in range(2)] == [set(), set()]


def test_view_waits_while_a_parent_runs_and_its_sql_edit_is_not_lost(
    dbt_project, built_instance, after_daily_tick
):
    defs, ticker = ready(dbt_project, built_instance, after_daily_tick)
    running = start_run(defs, built_instance, ["raw_orders"])
    edit_logic(dbt_project, "stg_orders")
    ticker.defs = reload_defs(dbt_project)
    assert ticker.tick() == set()
    assert ticker.tick() == set()

    end_run(built_instance, running)
    assert ticker.tick() == {"stg_orders"}
    assert ticker.tick() == set()


def test_view_added_to_the_project_is_requested_once(dbt_project, built_instance, after_daily_tick):
    _, ticker = ready(dbt_project, built_instance, after_daily_tick)
    new_view = dbt_project / "models" / "staging" / "stg_countries.sql"
    new_view.write_text("select distinct country from {{ ref('raw_customers') }}")
    ticker.defs = reload_defs(dbt_project)
    assert ticker.tick() == {"stg_countries"}
    assert [ticker.tick() for _ in range(2)] == [set(), set()]


def test_failed_view_run_is_not_retried(dbt_project, built_instance, after_daily_tick):
    _, ticker = ready(dbt_project, built_instance, after_daily_tick)
    edit_sql(dbt_project, "stg_orders", "select no_such_column from {{ ref('raw_orders') }}")
    ticker.defs = reload_defs(dbt_project)
    assert ticker.tick() == {"stg_orders"}
    result = materialize(ticker.defs, built_instance, ["stg_orders"], raise_on_error=False)
    assert not result.success
    assert [ticker.tick() for _ in range(3)] == [set(), set(), set()]

    materialize(ticker.defs, built_instance, ["raw_orders"])  # a new trigger: its parent updated
    assert ticker.tick() == {"stg_orders"}


def test_sql_edit_before_its_seed_exists_requests_nothing_until_the_seed_is_built(
    dbt_project, instance, after_daily_tick
):
    defs = build_defs(dbt_project)
    ticker = Ticker(defs, instance, after_daily_tick)
    assert ticker.tick() == set()  # a fresh instance: nothing exists
    edit_logic(dbt_project, "stg_customers")
    ticker.defs = reload_defs(dbt_project)
    assert [ticker.tick() for _ in range(2)] == [set(), set()]  # raw_customers is missing

    materialize(ticker.defs, instance, ["raw_customers"])
    assert ticker.tick() == {"stg_customers"}
    assert ticker.tick() == set()


def test_parent_update_while_another_parent_is_missing_waits_for_it(
    dbt_project, instance, after_daily_tick
):
    (dbt_project / "models" / "staging" / "stg_customer_orders.sql").write_text(
        "select c.id, count(o.id) as orders from {{ ref('raw_customers') }} as c\n"
        "left join {{ ref('raw_orders') }} as o on o.customer_id = c.id group by 1\n"
    )
    defs = reload_defs(dbt_project)
    ticker = Ticker(defs, instance, after_daily_tick)
    assert ticker.tick() == set()
    materialize(defs, instance, ["raw_customers"])
    assert [ticker.tick() for _ in range(2)] == [{"stg_customers"}, set()]  # raw_orders missing

    materialize(defs, instance, ["raw_orders"])
    assert ticker.tick() == {"stg_orders", "stg_customer_orders"}
    assert ticker.tick() == set()


def test_view_built_by_hand_while_its_sql_edit_waits_is_requested_once_more(
    dbt_project, built_instance, after_daily_tick
):
    _, ticker = ready(dbt_project, built_instance, after_daily_tick)
    edit_logic(dbt_project, "stg_orders")
    ticker.defs = reload_defs(dbt_project)
    materialize(ticker.defs, built_instance, ["stg_orders"])  # only a request spends the edit
    assert ticker.tick() == {"stg_orders"}
    assert ticker.tick() == set()
