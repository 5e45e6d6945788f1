"""A scheduled asset job that skips a tick while the same work is already in progress, or while
what it reads from outside its selection is missing or failed its tests."""

from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Annotated, Literal

import dagster as dg

# Dagster's own "not finished" set: queued, not started, starting, started, suspended, canceling.
from dagster.components.resolved.model import Resolver

from dbt_automation_demo.automation import invalid_cron_reason, invalid_timezone_reason
from dbt_automation_demo.components.custom_dbt_component import ComponentConfigError
from dbt_automation_demo.internals.check_executions import latest_check_executions
from dbt_automation_demo.internals.dagster_names import (
    NOT_FINISHED_STATUSES,
    AssetCheckExecutionRecordStatus,
)

COMPONENT = "SafeScheduledJobComponent"


@dataclass
class SafeScheduledJobComponent(dg.Component, dg.Resolvable):
    """An asset job on a cron schedule that never overlaps work on the same assets.

    A tick is skipped while a run of this job is in progress, or while any other in-progress
    run (the automation sensor's, a manual one, another schedule's) targets one of the job's
    assets. It is also skipped while a parent of the job's assets that the job does not build
    is missing or has a failed blocking check (an error-severity dbt test): such a run could
    only fail, or build on failed data. Otherwise it requests one run keyed by the scheduled
    time, so a tick evaluated twice launches once.
    """

    job_name: Annotated[
        str,
        Resolver.default(description="Name of the asset job.", examples=["hourly_dbt_tables_job"]),
    ]
    cron_schedule: Annotated[
        str,
        Resolver.default(description="When the job runs.", examples=["0 * * * *"]),
    ]
    asset_selection: Annotated[
        str,
        Resolver.default(
            description="Dagster asset selection string for the job; must match an asset.",
            examples=["tag:dagster/materialization=table"],
        ),
    ]
    skip_reason_prefix: Annotated[
        str,
        Resolver.default(
            description="Start of every skip reason, so skips are easy to find in the UI.",
            examples=["Hourly dbt tables schedule"],
        ),
    ] = "Skipping scheduled run"
    execution_timezone: Annotated[
        str,
        Resolver.default(description="IANA time zone of the cron.", examples=["UTC"]),
    ] = "UTC"
    default_status: Annotated[
        Literal["RUNNING", "STOPPED"],
        Resolver.default(description="Status on a fresh instance.", examples=["RUNNING"]),
    ] = "STOPPED"

    def __post_init__(self) -> None:
        self._raise_if(invalid_cron_reason(self.cron_schedule), "cron_schedule", self.cron_schedule)
        self._raise_if(
            invalid_timezone_reason(self.execution_timezone),
            "execution_timezone",
            self.execution_timezone,
        )
        try:
            dg.AssetSelection.from_string(self.asset_selection)
        except Exception as error:
            raise ComponentConfigError(
                COMPONENT, "asset_selection", self.asset_selection, f"cannot be parsed ({error})"
            ) from error

    @property
    def selection(self) -> dg.AssetSelection:
        return dg.AssetSelection.from_string(self.asset_selection)

    @property
    def schedule_name(self) -> str:
        return f"{self.job_name}_schedule"

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        path = context.component_path
        self._declared_in = f"{path.file_path / 'defs.yaml'}[{path.instance_key or 0}]"
        job = dg.define_asset_job(name=self.job_name, selection=self.selection)
        schedule = dg.ScheduleDefinition(
            name=self.schedule_name,
            job=job,
            cron_schedule=self.cron_schedule,
            execution_timezone=self.execution_timezone,
            default_status=dg.DefaultScheduleStatus[self.default_status],
            execution_fn=self.evaluate_tick,
        )
        return dg.Definitions(jobs=[job], schedules=[schedule])

    def evaluate_tick(self, context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        """Skip while the same work is in progress; otherwise one run keyed by the tick's time."""
        own_runs = context.instance.get_run_ids(
            filters=dg.RunsFilter(job_name=self.job_name, statuses=NOT_FINISHED_STATUSES)
        )
        if own_runs:
            return self._skip(f"job {self.job_name} already in progress in run(s) {_ids(own_runs)}")
        repository = context.repository_def
        selected = self.selection.resolve(repository.asset_graph)
        overlaps = _in_progress_overlaps(context.instance, repository, selected)
        if overlaps:
            keys = sorted(set().union(*overlaps.values()))
            return self._skip(
                f"{', '.join(key.to_user_string() for key in keys)} being materialized "
                f"by run(s) {_ids(overlaps)}"
            )
        not_ready = _parents_not_ready(context.instance, repository.asset_graph, selected)
        if not_ready:
            return self._skip(
                ", ".join(f"{key.to_user_string()} {why}" for key, why in not_ready.items())
                + f" (read by {self.job_name}, which does not build it)"
            )
        scheduled = context.scheduled_execution_time
        run_key = f"{self.job_name}:{scheduled.isoformat()}" if scheduled else None
        return dg.RunRequest(run_key=run_key)

    def check_against(self, defs: dg.Definitions) -> None:
        """Fail at load time when the job collides with another or selects nothing."""
        same_name = [job for job in defs.jobs or () if job.name == self.job_name]
        if len(same_name) > 1:
            self._raise_if("another job already has this name", "job_name", self.job_name)
        if not self.selection.resolve(defs.resolve_asset_graph()):
            self._raise_if("matches no asset", "asset_selection", self.asset_selection)

    def _skip(self, why: str) -> dg.SkipReason:
        return dg.SkipReason(f"{self.skip_reason_prefix}: {why}")

    def _raise_if(self, reason: str | None, attribute: str, value: object) -> None:
        if reason:
            where = getattr(self, "_declared_in", None)
            component = f"{where}: {COMPONENT}" if where else COMPONENT
            raise ComponentConfigError(component, attribute, value, reason)


def _in_progress_overlaps(
    instance: dg.DagsterInstance,
    repository: dg.RepositoryDefinition,
    keys: AbstractSet[dg.AssetKey],
) -> dict[str, AbstractSet[dg.AssetKey]]:
    """Run id -> the given assets that an unfinished run of any job will materialize."""
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=NOT_FINISHED_STATUSES))
    overlaps = {run.run_id: _targeted_keys(run, repository) & keys for run in runs}
    return {run_id: shared for run_id, shared in overlaps.items() if shared}


def _parents_not_ready(
    instance: dg.DagsterInstance, graph, selected: AbstractSet[dg.AssetKey]
) -> dict[dg.AssetKey, str]:
    """Parent outside the selection -> why a run would fail or read failed data: missing, or
    its latest blocking check failed on its latest materialization."""
    parents = sorted(
        parent
        for key in selected
        for parent in graph.get(key).parent_keys
        if parent not in selected and graph.get(parent).is_materializable
    )
    latest = {
        record.asset_entry.asset_key: record.asset_entry.last_materialization_record
        for record in instance.get_asset_records(parents)
    }
    checks = [check for parent in parents for check in graph.get(parent).check_keys]
    executions = latest_check_executions(
        instance, [check for check in checks if graph.get(check).blocking]
    )
    not_ready = {}
    for parent in parents:
        materialization = latest.get(parent)
        if materialization is None:
            not_ready[parent] = "missing"
            continue
        failed = sorted(
            check.name
            for check, execution in executions.items()
            if check.asset_key == parent
            and execution.status == AssetCheckExecutionRecordStatus.FAILED
            and _evaluated_on(execution, materialization.storage_id)
        )
        if failed:
            not_ready[parent] = f"failed blocking check {', '.join(failed)}"
    return not_ready


def _evaluated_on(execution, materialization_storage_id: int) -> bool:
    evaluation = execution.event.dagster_event.event_specific_data if execution.event else None
    target = getattr(evaluation, "target_materialization_data", None)
    return target is None or target.storage_id == materialization_storage_id


def _targeted_keys(
    run: dg.DagsterRun, repository: dg.RepositoryDefinition
) -> AbstractSet[dg.AssetKey]:
    # A run of a whole asset job carries no asset selection: its job's assets are its targets.
    if run.asset_selection is not None:
        return run.asset_selection
    if repository.has_job(run.job_name):
        return repository.get_job(run.job_name).asset_layer.selected_asset_keys
    return frozenset()


def _ids(run_ids: Iterable[str]) -> str:
    return ", ".join(sorted(run_ids))
