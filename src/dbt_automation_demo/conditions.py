"""The four conditions the policies are built from that Dagster's built-ins spread over many
nodes: each computes exactly what its built-in composition computes, in one node.

Dagster evaluates every node of every asset's condition tree on every tick, then serializes
each node's result into the sensor's cursor. Its ``any_deps_*`` conditions add several nodes
per parent (``any_deps_updated()`` seven), so most of a tick went into per-parent nodes whose
answer was "no". Here the parents are a loop inside one node, and a node whose candidates are
empty returns at once.

Conditions that are not Dagster's own cannot be evaluated by the daemon, which never imports
user code: the automation sensor evaluates them in the code server
(``use_user_code_server=True``, at most 500 assets per sensor; ``CustomDbtComponent`` splits
its assets accordingly).
"""

import asyncio
from collections.abc import Sequence

import dagster as dg
from dagster import AutomationCondition
from dagster._core.asset_graph_view.entity_subset import EntitySubset
from dagster._core.definitions.assets.graph.asset_graph import executable_in_same_run
from dagster._core.definitions.declarative_automation.automation_condition import (
    BuiltinAutomationCondition,
)
from dagster._core.storage.dagster_run import RunRecord
from dagster._record import record


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
    """``~in_progress() & ~any_deps_in_progress() & ~any_deps_missing().allow(all())``, in one
    node: not running, no parent running, and no parent that Dagster can build missing
    (unless it will be requested on this tick).

    A dbt source is an external asset Dagster never materializes, so it is always "missing";
    only parents Dagster can build count, or a model over a source would never run.
    """

    @property
    def name(self) -> str:
        return "safe_to_run"

    @property
    def requires_cursor(self) -> bool:
        return False

    async def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        safe = context.candidate_subset
        if not safe.is_empty:
            safe = safe.compute_difference(await _in_progress(context, context.key, safe))
        for parent in _parents(context):
            if safe.is_empty:
                break
            blocked = await _parent_running_or_missing(context, parent, safe)
            safe = safe.compute_difference(
                blocked.compute_mapped_subset(context.key, direction="down")
            )
        return dg.AutomationResult(context, safe)


@record
class SinceLastRequested(BuiltinAutomationCondition):
    """``trigger.since(newly_requested() & ~trigger)``, reading the trigger once.

    True from the evaluation on which ``trigger`` is true until the evaluation after a request
    on which ``trigger`` is not true again. ``newly_requested()`` is true on the evaluation
    *after* the request, so a trigger that arrives in between is not spent by a request made
    before it. Built from Dagster's ``since()``, the reset must repeat the trigger's whole tree.
    """

    trigger: AutomationCondition

    @property
    def name(self) -> str:
        return "since_last_requested"

    @property
    def children(self) -> Sequence[dg.AutomationCondition]:
        return [self.trigger, dg.AutomationCondition.newly_requested()]

    async def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        # As Dagster's since(): both sides over every partition, so no transition is missed.
        everything = context.asset_graph_view.get_full_subset(key=context.key)
        trigger_result, requested_result = await asyncio.gather(
            *(
                context.for_child_condition(
                    child, child_indices=[index], candidate_subset=everything
                ).evaluate_async()
                for index, child in enumerate(self.children)
            )
        )
        trigger, requested = trigger_result.true_subset, requested_result.true_subset
        true_subset = (context.previous_true_subset or context.get_empty_subset()).compute_union(
            trigger
        )
        true_subset = true_subset.compute_difference(requested.compute_difference(trigger))
        return dg.AutomationResult(
            context, true_subset, child_results=[trigger_result, requested_result]
        )


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


def _cron_tick_passed(context: dg.AutomationContext, cron: str, timezone: str) -> bool:
    # As Dagster's cron_tick_passed(): a tick at the previous evaluation's very time counts.
    if context.previous_evaluation_time is None:
        return False
    previous_tick = context.asset_graph_view.compute_previous_cron_tick(
        cron_schedule=cron, cron_timezone=timezone
    )
    return previous_tick >= context.previous_evaluation_time


def _parents(context: dg.AutomationContext) -> list[dg.AssetKey]:
    node = context.asset_graph.get(context.key)
    return sorted(key for key in node.parent_entity_keys if isinstance(key, dg.AssetKey))


async def _parent_updated(context: dg.AutomationContext, parent: dg.AssetKey) -> EntitySubset:
    """The parent's partitions (under this asset's candidates) newly updated by a run that did
    not target this asset, or requested on this tick."""
    candidates = context.candidate_subset.compute_mapped_subset(parent, direction="up")
    view = context.asset_graph_view
    updated = view.get_empty_subset(key=parent)
    if context.previous_temporal_context is not None and not candidates.is_empty:
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
    return updated.compute_union(_requested_this_tick(context, parent))


def _run_targeted(asset: dg.AssetKey, parent: dg.AssetKey):
    def targeted(run_record: RunRecord) -> bool:
        # A self-dependent asset's earlier partition was necessarily built by another run.
        if parent == asset:
            return False
        run = run_record.dagster_run
        return asset in (run.asset_selection or set()) | (run.asset_check_selection or set())

    return targeted


def _requested_this_tick(context: dg.AutomationContext, parent: dg.AssetKey) -> EntitySubset:
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
    running = await view.compute_run_in_progress_subset(key=key, from_subset=candidates)
    backfilling = await view.compute_backfill_in_progress_subset(key=key, from_subset=candidates)
    return running.compute_union(backfilling)


async def _parent_running_or_missing(
    context: dg.AutomationContext, parent: dg.AssetKey, safe: EntitySubset
) -> EntitySubset:
    candidates = safe.compute_mapped_subset(parent, direction="up")
    if candidates.is_empty:
        return candidates
    blocked = await _in_progress(context, parent, candidates)
    if context.asset_graph.get(parent).is_materializable:
        missing = await context.asset_graph_view.compute_missing_subset(
            key=parent, from_subset=candidates
        )
        blocked = blocked.compute_union(
            missing.compute_difference(_requested_this_tick(context, parent))
        )
    return blocked
