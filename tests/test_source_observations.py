"""Data that lands outside Dagster: dbt sources observed, the views below them refreshed once
per landing, nothing built on a source that has no data. A landing zone of CSV files read by
dbt-duckdb as sources: `landing.payments` sets `loaded_at_field` (observed through
`dbt source freshness`), `landing.refunds` does not (observed by its files)."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster.components.resolved.core_models import OpSpec

from dbt_automation_demo.components.source_observations import FRESHNESS_CHECK
from harness import (
    DAILY_TICK,
    OBSERVE_JOB,
    Ticker,
    add_a_landing_zone,
    build_defs,
    copy_dbt_project,
    land,
    materialize,
    observe,
    parse,
)

pytestmark = pytest.mark.usefixtures("dbt_from_a_preloaded_process")  # tests/preloaded_dbt.py

NOW = datetime(2031, 3, 4, 10, 0, tzinfo=UTC)


def project_with_a_landing_zone(destination: Path, **models: str) -> Path:
    """The shipped dbt project and its landing zone (still empty), with these marts, parsed."""
    project = add_a_landing_zone(copy_dbt_project(destination))
    for name, sql in models.items():
        (project / "models" / "marts" / f"{name}.sql").write_text(sql)
    parse(project)
    return project


WITH_DATA = {"landing/payments": None, "landing/refunds": None}


@pytest.fixture
def landing(tmp_path, duckdb_file, instance):
    """The project with its landing zone, every shipped asset built, and a ticker at NOW."""
    project = project_with_a_landing_zone(tmp_path / "analytics_dbt")
    defs = build_defs(project)
    ticker = Ticker(defs, instance, NOW)
    assert ticker.tick() == set()  # views wait for seeds, tables for the cron
    materialize(defs, instance, DAILY_TICK)  # all but the views over the (empty) landing zone
    return project, ticker, instance


def first_batches_observed_and_their_views_built(project, ticker, instance) -> None:
    land(project, "payments", 1)
    land(project, "refunds", 1)
    assert observe(ticker.defs, instance) == WITH_DATA
    assert ticker.tick() == {"stg_payments", "stg_refunds"}
    materialize(ticker.defs, instance, ["stg_payments", "stg_refunds"])
    assert ticker.tick() == set()


@pytest.mark.both_storages
def test_new_data_in_a_source_requests_the_views_below_it_once(landing):
    project, ticker, instance = landing
    first_batches_observed_and_their_views_built(project, ticker, instance)

    land(project, "refunds", 2)  # new data in one source only
    assert observe(ticker.defs, instance) == WITH_DATA
    assert ticker.tick() == {"stg_refunds"}
    assert ticker.tick() == set()  # requested once (its run has not even started)


@pytest.mark.both_storages
def test_an_observation_with_no_new_data_requests_nothing(landing):
    project, ticker, instance = landing
    first_batches_observed_and_their_views_built(project, ticker, instance)
    for _ in range(3):
        assert observe(ticker.defs, instance) == WITH_DATA
        assert ticker.tick() == set()


@pytest.mark.both_storages
def test_a_missing_source_holds_its_views_which_run_once_when_data_lands(landing):
    project, ticker, instance = landing
    assert ticker.tick() == set()  # never observed with data: held back
    why = observe(ticker.defs, instance)  # the run succeeds; each source's check says why not
    assert "No files found that match the pattern" in why["landing/payments"]  # dbt's error
    assert why["landing/refunds"] == f"no file matches {project}/landing/refunds/*.csv"
    assert ticker.tick() == set()

    land(project, "payments", 1)  # one source has data: its view runs, the other still waits
    assert observe(ticker.defs, instance)["landing/payments"] is None
    assert ticker.tick() == {"stg_payments"}
    materialize(ticker.defs, instance, ["stg_payments"])
    assert ticker.tick() == set()

    land(project, "refunds", 1)
    assert observe(ticker.defs, instance) == WITH_DATA
    assert ticker.tick() == {"stg_refunds"}
    assert ticker.tick() == set()


def test_an_observation_is_recorded_only_for_a_new_data_version(tmp_path, duckdb_file, instance):
    """So the tick after an observation reads only the sources with new data; each observation
    run still records every source's checks."""
    project = project_with_a_landing_zone(tmp_path / "analytics_dbt")
    defs = build_defs(project)

    def observations() -> dict[str, int]:
        return {
            source: len(
                instance.fetch_observations(dg.AssetKey.from_user_string(source), 10).records
            )
            for source in WITH_DATA
        }

    land(project, "payments", 1)
    land(project, "refunds", 1)
    assert observe(defs, instance) == WITH_DATA
    assert observations() == {"landing/payments": 1, "landing/refunds": 1}
    assert observe(defs, instance) == WITH_DATA  # the same data: its checks, no observation
    assert observations() == {"landing/payments": 1, "landing/refunds": 1}
    land(project, "refunds", 2)
    assert observe(defs, instance) == WITH_DATA
    assert observations() == {"landing/payments": 1, "landing/refunds": 2}


def test_the_first_observation_of_a_fresh_clone_sees_the_data_before_any_build(
    tmp_path, duckdb_file, instance
):
    """No build yet, so no DuckDB file nor its folder (dbt-duckdb hangs on those)."""
    project = project_with_a_landing_zone(tmp_path / "analytics_dbt")
    land(project, "payments", 1)
    land(project, "refunds", 1)
    assert not duckdb_file.parent.exists()
    assert observe(build_defs(project), instance) == WITH_DATA


def test_every_source_with_a_loaded_at_field_is_observed_through_dbt(
    tmp_path, duckdb_file, instance
):
    """Two sources read through `dbt source freshness`, in one dbt command (dagster-dbt once
    passed all but the first of the selected sources to dbt as stray arguments)."""
    project = add_a_landing_zone(copy_dbt_project(tmp_path / "analytics_dbt"))
    sources_yml = project / "models" / "staging" / "sources.yml"
    sources = yaml.safe_load(sources_yml.read_text())
    tables = sources["sources"][0]["tables"]
    tables.append({**tables[0], "name": "payments_again"})  # the same files, a second source
    sources_yml.write_text(yaml.safe_dump(sources))
    parse(project)
    land(project, "payments", 1)
    land(project, "refunds", 1)
    assert observe(build_defs(project), instance) == {**WITH_DATA, "landing/payments_again": None}


@pytest.mark.both_storages
def test_a_late_load_shows_as_dbt_says_warn_then_error(landing):
    """dbt's warn_after (1 hour) and error_after (1 day) on the source become its check."""
    project, ticker, instance = landing
    land(project, "refunds", 1)
    verdicts = []
    for batch, age in enumerate((timedelta(0), timedelta(hours=2), timedelta(days=2)), start=1):
        land(project, "payments", batch, loaded_at=datetime.now(UTC) - age)
        for old in (project / "landing" / "payments").glob("*.csv"):
            if old.name != f"batch_{batch}.csv":
                old.unlink()
        result = ticker.defs.resolve_job_def(OBSERVE_JOB).execute_in_process(instance=instance)
        (check,) = [
            check
            for check in result.get_asset_check_evaluations()
            if check.check_name == FRESHNESS_CHECK
        ]
        verdicts.append(
            (check.passed, check.severity, check.metadata["dbt freshness status"].value)
        )
    assert verdicts == [
        (True, dg.AssetCheckSeverity.WARN, "pass"),
        (False, dg.AssetCheckSeverity.WARN, "warn"),
        (False, dg.AssetCheckSeverity.ERROR, "error"),
    ]


def test_the_source_observations_run_in_the_builds_pool(tmp_path, duckdb_file):
    """One writer on DuckDB: the observation job waits in the queue while a build runs, and a
    build while it runs (the pool of `internals/observations_in_pool.py`)."""
    project = project_with_a_landing_zone(tmp_path / "analytics_dbt")
    shipped_op = OpSpec(name="analytics_dbt", pool="analytics_duckdb")  # as in defs.yaml
    defs = build_defs(project, op=shipped_op)
    job = defs.resolve_job_def(OBSERVE_JOB)
    dbt_job = defs.resolve_implicit_global_asset_job_def()
    assert job.graph.pools == {"analytics_duckdb"} == dbt_job.graph.pools
    schedule = defs.resolve_schedule_def("observe_analytics_dbt_sources_schedule")
    assert (schedule.cron_schedule, schedule.default_status) == (
        "*/5 * * * *",
        dg.DefaultScheduleStatus.RUNNING,
    )


@pytest.mark.both_storages
def test_a_table_below_a_source_waits_until_the_source_has_data(tmp_path, duckdb_file, instance):
    """Tables keep their cron, and are not built on a source that has no data."""
    project = project_with_a_landing_zone(
        tmp_path / "analytics_dbt",
        refund_count="select count(*) as refunds from {{ ref('stg_refunds') }}\n",
    )
    defs = build_defs(project)
    ticker = Ticker(defs, instance, datetime(2031, 3, 4, 5, 0, tzinfo=UTC))
    assert ticker.tick() == set()
    materialize(defs, instance, DAILY_TICK)
    assert ticker.tick_at(datetime(2031, 3, 4, 6, 0, 30, tzinfo=UTC)) == DAILY_TICK
    assert ticker.tick() == set()  # refund_count waits: stg_refunds is missing (no data yet)
    land(project, "refunds", 1)
    assert observe(ticker.defs, instance)["landing/refunds"] is None  # payments has none yet
    assert ticker.tick() == {"stg_refunds", "refund_count"}
