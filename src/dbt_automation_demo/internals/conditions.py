"""Single-node conditions, and the test gate's conditions, on Dagster's evaluation internals.

Speedups (``speedups: false`` uses the built-in composition each one names instead;
``tests/test_differential.py`` checks, on random instance states over several evaluations with
cursors, that each computes the same true subsets): ``AnyParentUpdated``, ``SafeToRun``,
``RunningAtLastTick``, ``SkippedSinceLastRequested``.

Dagster evaluates every node of every asset's condition tree on every tick, then serializes
each node's result into the sensor's cursor. Its ``any_deps_*`` conditions add several nodes
per parent (``any_deps_updated()`` seven), so most of a tick went into per-parent nodes whose
answer was "no". Here the parents are a loop inside one node, and a node whose candidates are
empty returns at once. A parent that holds an asset back is a child result named after it and
why, so the UI names it, as the built-ins' per-parent nodes did.

The test gate (no built-in computes these, so they stay with the switch off too):
``ParentFailed`` (a parent's blocking check or its last run failed) and
``SkippedAfterUpstreamFailed`` (dbt skipped the asset after an upstream failure in its run).

Conditions that are not Dagster's own cannot be evaluated by the daemon, which never imports
user code: the automation sensor evaluates them in the code server
(``use_user_code_server=True``, at most 500 assets per sensor; ``CustomDbtComponent`` splits
its assets accordingly).
"""

import asyncio
import weakref
from collections.abc import Sequence

import dagster as dg
from dagster import AssetKey
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.asset_graph_view.entity_subset import EntitySubset
from dagster._core.definitions.assets.graph.asset_graph import executable_in_same_run
from dagster._core.definitions.declarative_automation.automation_condition import (
    BuiltinAutomationCondition,
)
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionResolvedStatus
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES
from dagster._record import record

from dbt_automation_demo.conditions import since_last_requested
from dbt_automation_demo.internals.latest_runs import latest_run_failed


@record
class AnyParentUpdated(BuiltinAutomationCondition):
    """``AutomationCondition.any_deps_updated()``, in one node.

    True when a parent was materialized since the previous evaluation by a run that did not
    also target this asset, or a parent will be requested on this tick (and can run in the
    same run).
    """

    @property
    def name(self) -> str:
        return "any_parent_updated"

    @property
    def requires_cursor(self) -> bool:
        return False

    async def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        true_subset = context.get_empty_subset()
        if not context.candidate_subset.is_empty:
            for parent in _parents(context):
                updated = await _parent_updated(context, parent)
                true_subset = true_subset.compute_union(
                    updated.compute_mapped_subset(context.key, direction="down")
                )
        return dg.AutomationResult(
            context, context.candidate_subset.compute_intersection(true_subset)
        )


@record
class SafeToRun(BuiltinAutomationCondition):
    """``~in_progress() & ~any_deps_in_progress() & ~any_deps_missing().allow(all() |
    observed sources)``, in one node: not running, no parent running, and no parent that
    Dagster can build or observe missing (unless it will be requested on this tick).

    An observed dbt source is missing until an observation found data in it. An external
    asset that is not observable never gets an event, so it never counts (it would hold its
    children back forever).
    """

    @property
    def name(self) -> str:
        return "safe_to_run"

    @property
    def requires_cursor(self) -> bool:
        return False

    async def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        safe = context.candidate_subset
        held_back_by = []
        if not safe.is_empty:
            running = await _in_progress(context, context.key, safe)
            held_back_by += await _name_holders(context, context.key, "running", running)
            safe = safe.compute_difference(running)
        for parent in _parents(context):
            if safe.is_empty:
                break
            for why, blocked in await _parent_running_or_missing(context, parent, safe):
                held_back_by += await _name_holders(context, parent, why, blocked, held_back_by)
                safe = safe.compute_difference(
                    blocked.compute_mapped_subset(context.key, direction="down")
                )
        return dg.AutomationResult(context, safe, child_results=held_back_by)


@record
class RunningAtLastTick(BuiltinAutomationCondition):
    """``(tick & in_progress()).since(tick & ~in_progress())`` with
    ``tick = cron_tick_passed(cron_schedule, cron_timezone)``, in one node.

    True from the evaluation on which a tick has passed while the asset was running (its run
    is that tick's refresh) until one on which a tick has passed while it was not. The run
    storage is asked only on a tick.
    """

    cron_schedule: str
    cron_timezone: str

    @property
    def name(self) -> str:
        return f"running_at_last_tick({self.cron_schedule}, {self.cron_timezone})"

    async def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        if _cron_tick_passed(context, self.cron_schedule, self.cron_timezone):
            everything = context.asset_graph_view.get_full_subset(key=context.key)
            true_subset = await _in_progress(context, context.key, everything)
        else:
            true_subset = context.previous_true_subset or context.get_empty_subset()
        return dg.AutomationResult(context, true_subset)


@record
class ParentFailed(BuiltinAutomationCondition):
    """True while a parent that is not requested on this tick holds bad or unfinished data:
    its latest error-severity dbt test (a blocking asset check) failed on its latest
    materialization, or its latest run failed without materializing it (dbt skipped it after
    an upstream failure, or it failed itself).

    Warn-severity tests are not blocking checks, so they never count. A parent requested on
    this tick is tested again in the same run, where ``dbt build`` skips the child if the test
    fails again. Each such parent is a child result named after it and why, so the UI's
    evaluation names the parent that holds the asset back. A partitioned parent counts as a
    whole (dbt's models are not partitioned).
    """

    @property
    def name(self) -> str:
        return "parent_failed"

    @property
    def requires_cursor(self) -> bool:
        return False

    async def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        true_subset = context.get_empty_subset()
        parent_results = []
        parents = _parents(context) if not context.candidate_subset.is_empty else []
        for parent in parents:
            why = await _why_parent_failed(context, parent)
            if why is None:
                continue
            blocked = context.candidate_subset.compute_mapped_subset(parent, direction="up")
            named = await _name_holders(context, parent, why, blocked, parent_results)
            parent_results += named
            for result in named:
                true_subset = true_subset.compute_union(
                    result.true_subset.compute_mapped_subset(context.key, direction="down")
                )
        return dg.AutomationResult(
            context,
            context.candidate_subset.compute_intersection(true_subset),
            child_results=parent_results,
        )


@record
class HeldBackBy(BuiltinAutomationCondition):
    """What holds an asset back (the asset itself or a parent), and why: a child result of
    ``SafeToRun`` or ``ParentFailed``, true for the holder's partitions that do."""

    entity: AssetKey
    why: str

    @property
    def name(self) -> str:
        return f"{self.entity.to_user_string()}: {self.why}"

    async def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        return dg.AutomationResult(context, context.candidate_subset)


@record
class SkippedSinceLastRequested(BuiltinAutomationCondition):
    """``SinceLastRequested(trigger=SkippedAfterUpstreamFailed())``, in one node: true from
    the evaluation after a run skipped the asset (see ``SkippedAfterUpstreamFailed``) until
    the evaluation after a request on which it was not skipped again."""

    @property
    def name(self) -> str:
        return "skipped_since_last_requested"

    async def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        everything = context.asset_graph_view.get_full_subset(key=context.key)
        skipped = everything if _was_skipped(context) else context.get_empty_subset()
        requested = context.get_previous_requested_subset(context.key) or context.get_empty_subset()
        return dg.AutomationResult(context, since_last_requested(context, skipped, requested))


@record
class SkippedAfterUpstreamFailed(BuiltinAutomationCondition):
    """True on the evaluation after a run that was to materialize the asset ended without it
    because something upstream of it failed in that run: a blocking check, or an asset that
    was not materialized (``dbt build`` skips the rest of the branch).

    An asset that failed on its own is not true here: a failing asset is not retried. The
    runs are read once per tick for every asset: one query for the runs that failed since the
    previous evaluation, then each such run's events.
    """

    @property
    def name(self) -> str:
        return "skipped_after_upstream_failed"

    @property
    def requires_cursor(self) -> bool:
        return False

    async def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        skipped = _was_skipped(context)
        return dg.AutomationResult(
            context, context.candidate_subset if skipped else context.get_empty_subset()
        )


def _was_skipped(context: dg.AutomationContext) -> bool:
    """A run that failed since the asset's previous evaluation skipped it after an upstream
    failure in it."""
    return any(context.key in run_skipped for run_skipped in _skipped_in_failed_runs(context))


def _cron_tick_passed(context: dg.AutomationContext, cron: str, timezone: str) -> bool:
    # As Dagster's cron_tick_passed(): a tick at the previous evaluation's very time counts.
    if context.previous_evaluation_time is None:
        return False
    previous_tick = context.asset_graph_view.compute_previous_cron_tick(
        cron_schedule=cron, cron_timezone=timezone
    )
    return previous_tick >= context.previous_evaluation_time


def _parents(context: dg.AutomationContext) -> list[dg.AssetKey]:
    return sorted(asset_parents(context.asset_graph, context.key))


async def _parent_updated(context: dg.AutomationContext, parent: dg.AssetKey) -> EntitySubset:
    """The parent's partitions (under this asset's candidates) newly updated by a run that did
    not target this asset, or requested on this tick."""
    candidates = context.candidate_subset.compute_mapped_subset(parent, direction="up")
    view = context.asset_graph_view
    updated = view.get_empty_subset(key=parent)
    previous = context.previous_temporal_context
    if (
        previous is not None
        and not candidates.is_empty
        and _has_event_since(view, parent, previous)
    ):
        updated = candidates.compute_intersection(
            await view.compute_updated_since_temporal_context_subset(
                key=parent, temporal_context=context.previous_temporal_context
            )
        )
        if not updated.is_empty:
            updated = updated.compute_difference(
                await view.compute_latest_run_matches_subset(
                    from_subset=updated, filter_fn=_run_targeted(context.key, parent)
                )
            )
    return updated.compute_union(requested_this_tick(context, parent))


def _has_event_since(view: AssetGraphView, parent: dg.AssetKey, previous: TemporalContext) -> bool:
    """False only when an unpartitioned observed source was not observed since the previous
    evaluation. Dagster's updated-since query reads the event log for each observable parent on
    every tick (its batched asset records answer only for materializable ones): one query per
    source per tick, though most ticks follow no observation. One query per tick for every
    observation since answers for all of them."""
    node = view.asset_graph.get(parent)
    if node.is_materializable or not node.is_observable or node.partitions_def is not None:
        return True
    observed = _observed_since(view, previous.last_event_id or 0)
    return observed is None or parent in observed


# The most observations one query reads per tick; past it, each source is read as before.
OBSERVATIONS_READ_PER_TICK = 10_000
_observed_by_tick: "weakref.WeakKeyDictionary[AssetGraphView, dict[int, frozenset | None]]" = (
    weakref.WeakKeyDictionary()
)


def _observed_since(view: AssetGraphView, event_id: int) -> frozenset[dg.AssetKey] | None:
    """The assets observed after `event_id` and up to this tick's last event, or None when
    there were more than OBSERVATIONS_READ_PER_TICK observations."""
    by_event_id = _observed_by_tick.setdefault(view, {})
    if event_id not in by_event_id:
        records = view.instance.event_log_storage.get_event_records(
            dg.EventRecordsFilter(
                event_type=dg.DagsterEventType.ASSET_OBSERVATION,
                after_cursor=event_id,
                before_cursor=_plus_one(view.last_event_id),
            ),
            limit=OBSERVATIONS_READ_PER_TICK + 1,
        )
        by_event_id[event_id] = (
            None
            if len(records) > OBSERVATIONS_READ_PER_TICK
            else frozenset(record.asset_key for record in records)
        )
    return by_event_id[event_id]


def _run_targeted(asset: dg.AssetKey, parent: dg.AssetKey):
    def targeted(run_record: dg.RunRecord) -> bool:
        # A self-dependent asset's earlier partition was necessarily built by another run.
        if parent == asset:
            return False
        run = run_record.dagster_run
        return asset in (run.asset_selection or set()) | (run.asset_check_selection or set())

    return targeted


def requested_this_tick(context: dg.AutomationContext, parent: dg.AssetKey) -> EntitySubset:
    """The parent's request on this tick, where it runs in the same run as this asset."""
    requested = context.request_subsets_by_key.get(parent)
    if requested is None or not _runs_with(context, parent):
        return context.asset_graph_view.get_empty_subset(key=parent)
    return requested


def _runs_with(context: dg.AutomationContext, parent: dg.AssetKey) -> bool:
    # As Dagster's will_be_requested(): only a materializable parent's request counts.
    return context.asset_graph.get(parent).is_materializable and executable_in_same_run(
        asset_graph=context.asset_graph, child_key=context.key, parent_key=parent
    )


async def _in_progress(
    context: dg.AutomationContext, key: dg.AssetKey, candidates: EntitySubset
) -> EntitySubset:
    view = context.asset_graph_view
    if _no_run_in_progress_can_target(view, key):
        running = view.get_empty_subset(key=key)
    else:
        running = await view.compute_run_in_progress_subset(key=key, from_subset=candidates)
    backfilling = await view.compute_backfill_in_progress_subset(key=key, from_subset=candidates)
    return running.compute_union(backfilling)


# Per tick (one AssetGraphView per evaluation of a sensor): the assets that a queued or
# in-progress run targets, or None when one of those runs has no asset selection.
_targeted_by_runs_in_progress: "weakref.WeakKeyDictionary[AssetGraphView, frozenset | None]" = (
    weakref.WeakKeyDictionary()
)


def _no_run_in_progress_can_target(view: AssetGraphView, key: dg.AssetKey) -> bool:
    """True when no queued or in-progress run can have planned the unpartitioned asset, so
    Dagster's `in_progress()` is False for it: it asks the event log for the asset's latest
    planned materialization (two queries per asset and per parent on every evaluation; no
    open-source storage keeps it in the asset record), then that run's status, which must be
    queued or in progress. One read of the runs in progress per tick answers for every asset
    outside them; an asset one of them targets is still asked as Dagster asks.

    The runs are read once, when the first asset asks on the tick: a run created later in the
    same tick is seen on the next one. Dagster's read per asset has the same blind spot for a
    run created after that asset's read, so the window is the tick's length instead of the
    asset's evaluation, and a run's pool keeps two builds of one asset from overlapping."""
    if not isinstance(key, AssetKey) or view.asset_graph.get(key).partitions_def is not None:
        return False
    if view not in _targeted_by_runs_in_progress:
        _targeted_by_runs_in_progress[view] = _read_targeted_by_runs_in_progress(view)
    targeted = _targeted_by_runs_in_progress[view]
    return targeted is not None and key not in targeted


def _read_targeted_by_runs_in_progress(view: AssetGraphView) -> frozenset[AssetKey] | None:
    # The statuses Dagster's in_progress() counts (CachingInstanceQueryer).
    statuses = [*IN_PROGRESS_RUN_STATUSES, dg.DagsterRunStatus.QUEUED]
    targeted: set[AssetKey] = set()
    for run in view.instance.get_runs(dg.RunsFilter(statuses=statuses)):
        if run.asset_selection is None:
            return None
        targeted.update(run.asset_selection)
    return frozenset(targeted)


async def _parent_running_or_missing(
    context: dg.AutomationContext, parent: dg.AssetKey, safe: EntitySubset
) -> list[tuple[str, EntitySubset]]:
    """Why the parent holds back some of `safe` ("running", "missing", or for a source "not
    observed with data yet"), each with the parent's partitions that do."""
    candidates = safe.compute_mapped_subset(parent, direction="up")
    if candidates.is_empty:
        return []
    held = [("running", await _in_progress(context, parent, candidates))]
    node = context.asset_graph.get(parent)
    if node.is_materializable or node.is_observable:
        missing = await context.asset_graph_view.compute_missing_subset(
            key=parent, from_subset=candidates
        )
        why = "missing" if node.is_materializable else "not observed with data yet"
        held.append((why, missing.compute_difference(requested_this_tick(context, parent))))
    return [(why, subset) for why, subset in held if not subset.is_empty]


async def _name_holders(
    context: dg.AutomationContext,
    holder: dg.AssetKey,
    why: str,
    held: EntitySubset,
    named_before: Sequence[dg.AutomationResult] = (),
) -> list[dg.AutomationResult]:
    """The child result that names what holds the asset back (itself or a parent) and why, so
    the UI shows it; none when nothing is held. Only a blocked asset pays for it."""
    if held.is_empty:
        return []
    named = HeldBackBy(entity=holder, why=why)
    result = await context.for_child_condition(
        child_condition=named.with_label(named.name),
        child_indices=[None, len(named_before)],
        candidate_subset=held,
    ).evaluate_async()
    return [result]


async def _why_parent_failed(context: dg.AutomationContext, parent: dg.AssetKey) -> str | None:
    """Why a parent holds this asset back, or None."""
    graph, view = context.asset_graph, context.asset_graph_view
    if not graph.get(parent).is_materializable or not requested_this_tick(context, parent).is_empty:
        return None
    blocking = sorted(key for key in graph.get(parent).check_keys if graph.get(key).blocking)
    statuses = await asyncio.gather(
        *(
            view.compute_subset_with_status(
                key=key,
                status=AssetCheckExecutionResolvedStatus.FAILED,
                from_subset=view.get_full_subset(key=key),
            )
            for key in blocking
        )
    )
    failed = [
        key.name for key, status in zip(blocking, statuses, strict=True) if not status.is_empty
    ]
    if failed:
        return f"blocking check {', '.join(failed)} failed"
    if await latest_run_failed(view, parent):
        return "its latest run failed before materializing it"
    return None


# Per tick (one AssetGraphView per evaluation of a sensor), and per previous evaluation (an
# asset added since has none): the assets each run that failed since skipped after something
# upstream of them failed in it.
_skipped_by_tick: "weakref.WeakKeyDictionary[AssetGraphView, dict[int | None, list[frozenset]]]" = (
    weakref.WeakKeyDictionary()
)


def _skipped_in_failed_runs(context: dg.AutomationContext) -> list[frozenset]:
    previous = context.previous_temporal_context
    # A previous evaluation on an instance that had no event yet has no last event id.
    since = (previous.last_event_id or 0) if previous is not None else None
    by_previous = _skipped_by_tick.setdefault(context.asset_graph_view, {})
    if since not in by_previous:
        by_previous[since] = [
            _skipped_after_upstream_failed(context, run_id)
            for run_id in _runs_failed_since(context, since)
        ]
    return by_previous[since]


def _runs_failed_since(context: dg.AutomationContext, event_id: int | None) -> list[str]:
    if event_id is None:
        return []
    records = context.asset_graph_view.instance.fetch_run_status_changes(
        dg.RunStatusChangeRecordsFilter(
            event_type=dg.DagsterEventType.RUN_FAILURE,
            after_storage_id=event_id,
            before_storage_id=_plus_one(context.asset_graph_view.last_event_id),
        ),
        limit=1000,
    ).records
    return sorted({record.run_id for record in records})


def _plus_one(event_id: int | None) -> int | None:
    return None if event_id is None else event_id + 1


def _skipped_after_upstream_failed(context: dg.AutomationContext, run_id: str) -> frozenset:
    """The assets the run planned and did not materialize because something upstream of them
    failed in it: a blocking check, or a planned asset that was not materialized."""
    graph = context.asset_graph
    events = context.asset_graph_view.instance.all_logs(
        run_id,
        of_type={
            dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
            dg.DagsterEventType.ASSET_MATERIALIZATION,
            dg.DagsterEventType.ASSET_CHECK_EVALUATION,
        },
    )
    planned, materialized, failed_checks = set(), set(), set()
    for event in events:
        dagster_event = event.dagster_event
        if dagster_event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = dagster_event.event_specific_data
            key = evaluation.asset_check_key
            if not evaluation.passed and graph.has(key) and graph.get(key).blocking:
                failed_checks.add(key.asset_key)
        elif dagster_event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialized.add(dagster_event.asset_key)
        else:
            planned.add(dagster_event.asset_key)
    not_built = planned - materialized
    failed_upstream = failed_checks | not_built
    return frozenset(key for key in not_built if asset_parents(graph, key) & failed_upstream)


def asset_parents(graph, key: dg.AssetKey) -> set[dg.AssetKey]:
    """The asset's parents that are assets (not checks)."""
    return {
        parent for parent in graph.get(key).parent_entity_keys if isinstance(parent, dg.AssetKey)
    }
