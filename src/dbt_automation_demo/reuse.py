"""Reuse, as dbt State decides it: a due node is built only when what it reads has changed.

``NothingNewSinceLastBuild`` is true for a node that its policy would request but that should
keep its last build (dbt State "reuses" it). The policies in ``automation.py`` request a node
only where it is false; the settings come from the node's dbt config
(``components/dbt_state.py``).

Guarantees, for a node that reuses:
- it is built when its code version differs from its last build's (an edit of its logic, of a
  macro it calls: a change of comments or layout is not one), whatever its lag tolerance;
- otherwise only when a parent has new data since its last build (with
  ``require_fresh_data_from: all``, every parent), and its last build is at least its
  ``lag_tolerance`` old;
- new data is a parent's build recorded after the node's last build was planned, by another
  run, or an observation of a dbt source with a new data version since then (one that found
  the same data is not); a parent requested on the same tick counts too; a view holds no
  data, so new data below a view counts for the nodes above it (dbt State propagates
  freshness through views);
- it never loses an update: data that lands while the node's own run is under way counts as
  new for the next decision, and a trigger that waits on the tolerance stays until a request
  spends it (the policies' triggers are spent only by a request);
- a node never built is built.

Written on Dagster's condition-evaluation API and its per-tick cached reads of the instance
(``CachingInstanceQueryer``), as ``conditions.py``: docs/internals.md lists the names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import dagster as dg
from dagster._core.definitions.declarative_automation.automation_condition import (
    BuiltinAutomationCondition,
)
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._record import record

from dbt_automation_demo.internals.conditions import (
    HeldBackBy,
    asset_parents,
    requested_this_tick,
)
from dbt_automation_demo.internals.dagster_names import CODE_VERSION_TAG

# The tag the component gives every dbt asset, its dbt materialization.
MATERIALIZATION_TAG = "dagster/materialization"
NO_NEW_DATA = "no new data since its last build"
# Plans of the node read back from its last build to find that build's (other runs may have
# planned it meanwhile and failed or not started).
PLANS_READ = 20
# dbt State's default: a node with new data is rebuilt once its last build is this old.
DEFAULT_LAG_TOLERANCE = timedelta(minutes=45)


@dataclass(frozen=True)
class ReuseSettings:
    """How a reusing node decides to build: after `lag_tolerance` since its last build, and only
    with new data from any (or all) of its parents, or a change of its own code."""

    lag_tolerance: timedelta = DEFAULT_LAG_TOLERANCE
    require_fresh_data_from: Literal["any", "all"] = "any"

    @property
    def label(self) -> str:
        tolerance = _short(self.lag_tolerance)
        return f"lag tolerance {tolerance}, new data from {self.require_fresh_data_from}"


@record
class NothingNewSinceLastBuild(BuiltinAutomationCondition):
    """True where the node keeps its last build: its code is unchanged, and no parent (or not
    every parent) has new data since that build, or the build is younger than the tolerance.
    A child result says which, so the UI explains why a due node was not built."""

    lag_tolerance_minutes: int
    require_fresh_data_from: str  # "any" or "all"

    @property
    def name(self) -> str:
        return (
            f"nothing new since last build (lag tolerance {self.lag_tolerance_minutes} min, "
            f"new data from {self.require_fresh_data_from})"
        )

    @property
    def requires_cursor(self) -> bool:
        return False

    async def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        if context.candidate_subset.is_empty:
            return dg.AutomationResult(context, context.candidate_subset)
        why = self._why_reused(context)
        if why is None:
            return dg.AutomationResult(context, context.get_empty_subset())
        reason = HeldBackBy(entity=context.key, why=why)
        child = await context.for_child_condition(
            child_condition=reason.with_label(reason.name),
            child_indices=[0],
            candidate_subset=context.candidate_subset,
        ).evaluate_async()
        return dg.AutomationResult(context, context.candidate_subset, child_results=[child])

    def _why_reused(self, context: dg.AutomationContext) -> str | None:
        """Why the node keeps its last build, or None when it is to be built."""
        last_build = _last_build(context, context.key)
        if last_build is None or _code_changed(context, last_build):
            return None
        planned = _planned_storage_id(context, last_build)
        parents = sorted(_data_parents(context, context.key))
        fresh = [
            parent
            for parent in parents
            if _has_new_data(context, parent, last_build.run_id, planned, seen=set())
        ]
        if not fresh:
            return NO_NEW_DATA
        if self.require_fresh_data_from == "all" and len(fresh) < len(parents):
            waiting = ", ".join(key.to_user_string() for key in parents if key not in fresh)
            return f"{NO_NEW_DATA} from {waiting} (require_fresh_data_from: all)"
        age = context.evaluation_time.timestamp() - last_build.timestamp
        if age < self.lag_tolerance_minutes * 60:
            minutes = self.lag_tolerance_minutes
            return f"new data, within its lag tolerance ({minutes} min) of its last build"
        return None


def _last_build(context: dg.AutomationContext, key: dg.AssetKey) -> dg.EventLogRecord | None:
    queryer = context.asset_graph_view.get_inner_queryer_for_back_compat()
    record = queryer.get_asset_record(key)
    return record.asset_entry.last_materialization_record if record else None


def _code_changed(context: dg.AutomationContext, last_build: dg.EventLogRecord) -> bool:
    materialization = last_build.asset_materialization
    # A materialization reported without tags has None for them.
    built_with = (materialization.tags or {}).get(CODE_VERSION_TAG) if materialization else None
    return built_with != context.asset_graph.get(context.key).code_version


def _planned_storage_id(context: dg.AutomationContext, last_build: dg.EventLogRecord) -> int:
    """Where the last build's run planned it, before it read any parent (the event log's own
    order: SQLite keeps each run's events apart, numbered on their own); the build itself for
    a materialization recorded outside a run. 0 when the plan is not among the latest
    `PLANS_READ` before the build: every parent's data then counts as new (one build too many,
    never one too few)."""
    if not last_build.run_id:
        return last_build.storage_id
    plans = context.asset_graph_view.instance.event_log_storage.get_event_records(
        dg.EventRecordsFilter(
            event_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
            asset_key=context.key,
            before_cursor=last_build.storage_id,
        ),
        limit=PLANS_READ,
        ascending=False,
    )
    return next((plan.storage_id for plan in plans if plan.run_id == last_build.run_id), 0)


def _data_parents(context: dg.AutomationContext, key: dg.AssetKey) -> Iterable[dg.AssetKey]:
    """The parents that can have new data: built or observed (an external asset no one
    observes never has any)."""
    graph = context.asset_graph
    for parent in asset_parents(graph, key):
        if graph.get(parent).is_materializable or graph.get(parent).is_observable:
            yield parent


def _has_new_data(
    context: dg.AutomationContext,
    parent: dg.AssetKey,
    build_run_id: str,
    after_storage_id: int,
    seen: set[dg.AssetKey],
) -> bool:
    """The parent was built after `after_storage_id` by a run other than the node's build, or
    observed with a new data version since then, or is requested on this tick; for a view, or
    any of its parents."""
    if parent in seen:
        return False
    seen.add(parent)
    if not requested_this_tick(context, parent).is_empty:
        return True
    queryer = context.asset_graph_view.get_inner_queryer_for_back_compat()
    if not context.asset_graph.get(parent).is_materializable:
        # An observation that found the same data is not new data (as for the views' triggers).
        return bool(
            queryer.get_asset_partitions_updated_after_cursor(
                parent,
                asset_partitions=None,
                after_cursor=after_storage_id,
                respect_materialization_data_versions=False,
            )
        )
    latest = queryer.get_latest_materialization_or_observation_record(
        AssetKeyPartitionKey(parent), after_cursor=after_storage_id
    )
    if latest is not None and latest.run_id != build_run_id:
        return True
    if context.asset_graph.get(parent).tags.get(MATERIALIZATION_TAG) != "view":
        return False
    return any(
        _has_new_data(context, grandparent, build_run_id, after_storage_id, seen)
        for grandparent in _data_parents(context, parent)
    )


def _short(duration: timedelta) -> str:
    minutes = int(duration.total_seconds() // 60)
    if minutes and minutes % (24 * 60) == 0:
        return f"{minutes // (24 * 60)}d"
    if minutes and minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"
