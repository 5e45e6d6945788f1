"""Why the policies are not the usual sketches: each sketch's failure, shown on real runs."""

from datetime import timedelta

import dagster as dg
import pytest

from dbt_automation_demo.automation import sketch_table_policy, sketch_view_policy
from dbt_automation_demo.components.custom_dbt_component import CustomDbtComponent
from harness import (
    ALL_ASSETS,
    EVERY_VIEW,
    SEEDS,
    TABLES,
    Ticker,
    build_defs,
    end_run,
    materialize,
    names,
    project_over_a_dbt_source,
    reload_defs,
    start_run,
)

pytestmark = pytest.mark.usefixtures("dbt_from_a_preloaded_process")  # tests/preloaded_dbt.py


class SketchDbtComponent(CustomDbtComponent):
    """The design's conditions: `code_version_changed | newly_updated`, `on_cron & ~in_progress`."""

    def policy_for(self, node, materialized):
        return sketch_view_policy() if materialized == "view" else sketch_table_policy()


class EagerDbtComponent(CustomDbtComponent):
    def policy_for(self, node, materialized):
        return dg.AutomationCondition.eager()


class MissingOnlyDbtComponent(CustomDbtComponent):
    def policy_for(self, node, materialized):
        return dg.AutomationCondition.missing()


class OnMissingDbtComponent(CustomDbtComponent):
    def policy_for(self, node, materialized):
        return dg.AutomationCondition.on_missing()


def sketch_ready(dbt_project, instance, now):
    defs = build_defs(dbt_project, component_cls=SketchDbtComponent)
    ticker = Ticker(defs, instance, now)
    assert ticker.tick() == set()
    materialize(defs, instance, ALL_ASSETS)
    return defs, ticker


def test_sketch_view_ignores_its_seed_update(dbt_project, instance, after_daily_tick):
    defs, ticker = sketch_ready(dbt_project, instance, after_daily_tick)
    assert ticker.tick() == EVERY_VIEW  # its own update, see below
    materialize(defs, instance, EVERY_VIEW)
    ticker.tick()
    materialize(defs, instance, ["raw_customers"])
    assert ticker.tick() == set()  # walkthrough 2 expects stg_customers here


def test_sketch_view_requests_itself_after_each_of_its_own_runs(
    dbt_project, instance, after_daily_tick
):
    defs, ticker = sketch_ready(dbt_project, instance, after_daily_tick)
    for _ in range(2):
        assert ticker.tick() == EVERY_VIEW
        materialize(defs, instance, EVERY_VIEW)


def test_sketch_table_never_refreshes_below_views_that_did_not_change(
    dbt_project, instance, before_daily_tick
):
    defs, ticker = sketch_ready(dbt_project, instance, before_daily_tick)
    ticker.tick()
    materialize(defs, instance, EVERY_VIEW)  # settle the views' own loop
    ticker.tick()
    assert ticker.tick_at(before_daily_tick.replace(hour=6)) == SEEDS
    materialize(defs, instance, SEEDS)
    later = [ticker.tick(after=timedelta(hours=2)) for _ in range(8)]  # to 22:00
    assert not TABLES & set().union(*later)


@pytest.mark.parametrize("component_cls", [EagerDbtComponent, OnMissingDbtComponent])
def test_stock_conditions_skip_a_view_added_after_the_first_evaluation(
    dbt_project, instance, after_daily_tick, component_cls
):
    defs = build_defs(dbt_project, component_cls=component_cls)
    materialize(defs, instance, ALL_ASSETS)
    ticker = Ticker(defs, instance, after_daily_tick)
    ticker.tick()
    (dbt_project / "models" / "staging" / "stg_countries.sql").write_text(
        "select distinct country from {{ ref('raw_customers') }}"
    )
    ticker.defs = reload_defs(dbt_project, component_cls=component_cls)
    assert "stg_countries" in names(ticker.defs.resolve_asset_graph().materializable_asset_keys)
    assert [ticker.tick(), ticker.tick()] == [set(), set()]


def test_missing_alone_requests_on_every_tick_and_again_after_a_failed_run(
    dbt_project, instance, after_daily_tick
):
    defs = build_defs(dbt_project, component_cls=MissingOnlyDbtComponent)
    ticker = Ticker(defs, instance, after_daily_tick)
    assert [ticker.tick() for _ in range(3)] == [ALL_ASSETS] * 3
    failed = start_run(defs, instance, ALL_ASSETS)
    end_run(instance, failed)  # it built nothing
    assert ticker.tick() == ALL_ASSETS


def test_sketch_table_never_fires_below_a_dbt_source(
    tmp_path, duckdb_file, instance, before_daily_tick
):
    project = project_over_a_dbt_source(tmp_path / "with_source", duckdb_file)
    defs = build_defs(project, component_cls=SketchDbtComponent)
    ticker = Ticker(defs, instance, before_daily_tick)
    ticker.tick()
    materialize(defs, instance, ALL_ASSETS | {"refund_totals"})  # everything exists
    ticker.tick()  # sees those updates (on_cron's tick is also spent by the asset's own update)
    ticks = [ticker.tick(after=timedelta(hours=1)) for _ in range(24)]  # a whole day, 06:00 too
    assert set().union(*ticks) >= SEEDS  # the cron fired: on_cron requests the seeds ...
    assert "refund_totals" not in set().union(*ticks)  # ... never the table below the source
