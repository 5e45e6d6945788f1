"""The hourly schedule skips while the same work is in progress or what it reads from outside
its selection is missing or failed its tests, and never launches a tick twice."""

import logging
import shutil
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.scheduler.instigation import TickStatus
from dagster._core.storage.tags import RUN_KEY_TAG
from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
from dagster._core.workspace.load_target import ModuleTarget
from dagster._scheduler.scheduler import launch_scheduled_runs

from dbt_automation_demo.components.source_observations import observation_schedule_name
from harness import (
    REPO_ROOT,
    copy_dagster_project,
    dg_in,
    end_run,
    record_run,
    start_run,
)

# Every test that uses an instance runs on SQLite and on PostgreSQL (conftest).
pytestmark = pytest.mark.both_storages

JOB = "hourly_dbt_tables_job"
SCHEDULE = f"{JOB}_schedule"
OBSERVATION_SCHEDULE = observation_schedule_name("analytics_dbt")  # the dbt project's name
PREFIX = "Hourly dbt tables schedule"
ELEVEN = datetime(2031, 3, 4, 11, tzinfo=UTC)
UNFINISHED = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
    dg.DagsterRunStatus.SUSPENDED,
]


# The hourly job builds the marts; these are what it reads and does not build.
PARENTS_OUTSIDE = ("stg_customers", "stg_orders")
STATUS_TEST = (
    "accepted_values_stg_orders_status__placed__shipped__completed__return_pending__returned"
)


def report_parents_built(instance: dg.DagsterInstance) -> None:
    for view in PARENTS_OUTSIDE:
        instance.report_runless_asset_event(dg.AssetMaterialization(view))


@pytest.fixture
def instance(instance, request):
    """The instance, with the job's parents outside it built unless marked `nothing_built`."""
    if not request.node.get_closest_marker("nothing_built"):
        report_parents_built(instance)
    return instance


def evaluate(defs: dg.Definitions, instance: dg.DagsterInstance, at: datetime = ELEVEN):
    """One tick of the schedule, as the daemon evaluates it."""
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=at, repository_def=defs.get_repository_def()
    )
    data = defs.resolve_schedule_def(SCHEDULE).evaluate_tick(context)
    return data.run_requests or [], data.skip_message


def run_of_job(defs, instance, status: dg.DagsterRunStatus) -> dg.DagsterRun:
    return record_run(instance, defs.resolve_job_def(JOB), status)


def test_no_run_in_progress_requests_one_run_keyed_by_the_tick(shipped_defs, instance):
    requests, skip = evaluate(shipped_defs, instance)
    again, _ = evaluate(shipped_defs, instance)
    next_hour, _ = evaluate(shipped_defs, instance, at=ELEVEN.replace(hour=12))
    assert skip is None
    assert [request.run_key for request in requests] == [f"{JOB}:2031-03-04T11:00:00+00:00"]
    assert [request.run_key for request in again] == [requests[0].run_key]
    assert next_hour[0].run_key != requests[0].run_key


@pytest.mark.parametrize("status", UNFINISHED, ids=lambda status: status.value)
def test_run_of_the_job_in_progress_skips_until_it_ends(shipped_defs, instance, status):
    run = run_of_job(shipped_defs, instance, status)
    requests, skip = evaluate(shipped_defs, instance)
    assert requests == []
    assert skip == f"{PREFIX}: job {JOB} already in progress in run(s) {run.run_id}"
    assert instance.get_run_by_id(run.run_id).status == status

    end_run(instance, run)
    requests, skip = evaluate(shipped_defs, instance)
    assert (len(requests), skip) == (1, None)


def test_other_run_materializing_a_selected_table_skips_naming_it(shipped_defs, instance):
    run = start_run(shipped_defs, instance, ["stg_orders", "order_summary"])
    requests, skip = evaluate(shipped_defs, instance)
    assert requests == []
    assert skip == f"{PREFIX}: order_summary being materialized by run(s) {run.run_id}"


def test_other_run_of_unrelated_assets_does_not_skip(shipped_defs, instance):
    start_run(shipped_defs, instance, ["raw_customers", "stg_customers"])
    requests, skip = evaluate(shipped_defs, instance)
    assert (len(requests), skip) == (1, None)


def test_own_run_is_seen_behind_more_than_a_hundred_other_runs(shipped_defs, instance):
    own = run_of_job(shipped_defs, instance, dg.DagsterRunStatus.STARTED)
    for _ in range(101):
        start_run(shipped_defs, instance, ["raw_orders"])
    requests, skip = evaluate(shipped_defs, instance)
    assert requests == []
    assert skip == f"{PREFIX}: job {JOB} already in progress in run(s) {own.run_id}"


def test_whole_job_run_without_asset_selection_counts_as_its_assets(shipped_defs, instance):
    other_job = shipped_defs.resolve_implicit_global_asset_job_def()
    run = instance.create_run_for_job(job_def=other_job, status=dg.DagsterRunStatus.STARTED)
    assert run.asset_selection is None  # the whole job: no selection is recorded
    _, skip = evaluate(shipped_defs, instance)
    assert skip == (
        f"{PREFIX}: customer_orders, customer_segments, order_summary being materialized "
        f"by run(s) {run.run_id}"
    )


@pytest.mark.nothing_built
def test_a_tick_skips_naming_the_parents_outside_its_selection_that_are_missing(
    shipped_defs, instance
):
    requests, skip = evaluate(shipped_defs, instance)
    assert requests == []
    assert skip == (
        f"{PREFIX}: stg_customers missing, stg_orders missing (read by {JOB}, which does not "
        "build it)"
    )


def test_a_tick_skips_naming_a_parent_whose_blocking_check_failed_on_its_latest_data(
    shipped_defs, instance
):
    stg_orders = dg.AssetKey("stg_orders")
    latest = instance.get_latest_materialization_event(stg_orders)
    failed = dg.AssetCheckEvaluation(
        asset_key=stg_orders,
        check_name=STATUS_TEST,
        passed=False,
        target_materialization_data=AssetCheckEvaluationTargetMaterializationData(
            storage_id=instance.get_asset_records([stg_orders])[
                0
            ].asset_entry.last_materialization_record.storage_id,
            run_id=latest.run_id,
            timestamp=latest.timestamp,
        ),
    )
    instance.report_runless_asset_event(failed)
    requests, skip = evaluate(shipped_defs, instance)
    assert requests == []
    assert skip == (
        f"{PREFIX}: stg_orders failed blocking check {STATUS_TEST} (read by {JOB}, which does "
        "not build it)"
    )

    report_parents_built(instance)  # rebuilt: the failed test was about the data before
    requests, skip = evaluate(shipped_defs, instance)
    assert (len(requests), skip) == (1, None)


SCHEDULE_DOC = """
---
type: dbt_automation_demo.components.safe_scheduled_job_component.SafeScheduledJobComponent
attributes:
  job_name: {job_name}
  cron_schedule: "{cron}"
  asset_selection: "{selection}"
  execution_timezone: {timezone}
"""
GOOD = {"job_name": "nightly_job", "cron": "0 3 * * *", "selection": "*", "timezone": "UTC"}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"cron": "0 * * *"}, "`cron_schedule` = '0 * * *': '0 * * *' is not a valid cron string"),
        (
            {"timezone": "Mars/Olympus_Mons"},
            "`execution_timezone` = 'Mars/Olympus_Mons': 'Mars/Olympus_Mons' is not a known IANA",
        ),
        (
            {"selection": "tag:dagster/materialization=tabel"},
            "`asset_selection` = 'tag:dagster/materialization=tabel': matches no asset",
        ),
        ({"job_name": JOB}, f"`job_name` = '{JOB}': another job already has this name"),
    ],
    ids=["cron", "timezone", "selection", "job_name"],
)
def test_bad_schedule_configuration_fails_dg_check_defs(tmp_path, bad, message):
    project = copy_dagster_project(tmp_path / "project")
    defs_yaml = project / "src" / "dbt_automation_demo" / "defs" / "analytics" / "defs.yaml"
    defs_yaml.write_text(defs_yaml.read_text() + SCHEDULE_DOC.format(**{**GOOD, **bad}))
    checked = dg_in(project, "check", "defs")
    assert checked.returncode != 0
    assert f"SafeScheduledJobComponent attribute {message}" in checked.stdout + checked.stderr


def test_a_tick_evaluated_twice_launches_one_run(tmp_path):
    """The 11:00 tick is evaluated, its run is submitted, and the daemon dies before it marks
    the tick done. Restarted after that run has ended, it evaluates the tick again (while the
    run is still going the schedule skips instead) and finds the run it already made for it."""
    with scheduler_on_a_fresh_instance(tmp_path) as (instance, workspace, schedule):
        report_parents_built(instance)
        run_the_scheduler_at(workspace, ELEVEN - timedelta(minutes=1))  # the schedule's cursor
        run_the_scheduler_at(workspace, ELEVEN + timedelta(seconds=30))
        (tick,) = instance.get_ticks(schedule.get_remote_origin_id(), schedule.selector_id)
        assert (tick.status, len(instance.get_runs())) == (TickStatus.SUCCESS, 1)

        (run,) = instance.get_runs()
        end_run(instance, run)
        instance.update_tick(tick.with_status(TickStatus.STARTED))  # died before marking it
        run_the_scheduler_at(workspace, ELEVEN + timedelta(seconds=40))
        (tick,) = instance.get_ticks(schedule.get_remote_origin_id(), schedule.selector_id)
        (run,) = instance.get_runs()
        assert tick.status == TickStatus.SUCCESS
        assert tick.run_ids == [run.run_id]
        assert run.tags[RUN_KEY_TAG] == f"{JOB}:2031-03-04T11:00:00+00:00"


@pytest.mark.nothing_built
def test_a_fresh_dev_server_left_across_the_hour_launches_nothing(tmp_path):
    """Walkthrough 1: nothing has been built, so the top-of-the-hour tick skips."""
    with scheduler_on_a_fresh_instance(tmp_path) as (instance, workspace, schedule):
        run_the_scheduler_at(workspace, ELEVEN - timedelta(minutes=1))
        run_the_scheduler_at(workspace, ELEVEN + timedelta(seconds=30))
        (tick,) = instance.get_ticks(schedule.get_remote_origin_id(), schedule.selector_id)
        assert (tick.status, instance.get_runs()) == (TickStatus.SKIPPED, [])
        assert tick.skip_reason.startswith(f"{PREFIX}: stg_customers missing, stg_orders missing")


@contextmanager
def scheduler_on_a_fresh_instance(tmp_path):
    """The scheduler daemon's own code on a real instance (the project's dagster.yaml), with
    the hourly schedule started and the source observation's stopped (its own tests are in
    test_source_observations.py)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster_home" / "dagster.yaml", home)
    target = ModuleTarget(
        module_name="dbt_automation_demo.definitions",
        attribute=None,
        working_directory=str(REPO_ROOT),
        location_name=REPO_ROOT.name,  # as dg names it
    )
    with (
        dg.DagsterInstance.from_config(str(home)) as instance,
        create_test_daemon_workspace_context(target, instance) as workspace,
    ):
        repository = (
            workspace.create_request_context()
            .get_code_location(REPO_ROOT.name)
            .get_repository("__repository__")
        )
        schedule, observation = map(repository.get_schedule, (SCHEDULE, OBSERVATION_SCHEDULE))
        instance.start_schedule(schedule)
        instance.stop_schedule(
            observation.get_remote_origin_id(), observation.selector_id, observation
        )
        yield instance, workspace, schedule


def run_the_scheduler_at(workspace, now: datetime) -> None:
    with freeze_time(now):
        list(launch_scheduled_runs(workspace, logging.getLogger("scheduler"), now, {}))
