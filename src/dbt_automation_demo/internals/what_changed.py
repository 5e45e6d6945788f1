"""Evaluate only what can have changed: the root of every policy, with the speedups.

Dagster evaluates every node of every asset's condition on every tick, though most ticks change
nothing for most assets. ``EvaluatedOnChange(policy)`` evaluates the policy when something it
reads may have changed, and otherwise carries the previous evaluation forward unchanged: the
same true subsets and node cursors, nothing requested, and no new evaluation record (the UI
shows the last one, which stands).

A policy's evaluation is a function of what it reads, so the previous result is provably the
one it would compute again when all of this holds (``tests/test_differential.py`` checks it:
on random instance states, over evaluations with cursors, the requests with and without it are
equal):

- the previous evaluation was itself a fixed point: nothing was requested on it or on the one
  before it, its inputs were as quiet as these, and every node's cursor came out as it went in;
- every node of the policy is one whose inputs this module knows (Dagster's and this project's
  own conditions, the list below); a policy with any other node, reuse's lag tolerance
  among them (time alone changes it), is evaluated on every tick;
- no event since the previous evaluation touched the asset or a parent (a materialization, an
  observation, a planned or failed materialization) and no run targeting one of them changed
  status (queued, started, ended, cancelled: one query per event type per tick, for every
  asset); their latest events, and the latest executions of the checks the policy reads
  (blocking ones, which the test gate reads), are the ones the previous evaluation saw (a
  wipe, a check result reported without a run);
- no tick of a cron the policy reads has passed since;
- its code version, its parents, and the policy itself are the same;
- no parent is requested on this tick, and no backfill is in progress.

The conditions it wraps read nothing else: not the time (except through a cron), not the
asset's children. The previous cursor is Dagster's private per-asset cursor
(``AutomationContext._cursor``); a carried result returns it, with this tick's time and event
id (nothing relevant happened in between, so later "since the previous evaluation" reads stay
exact). The policy's node cursors are stored packed in one string (``Packed``): Dagster
serializes the whole sensor cursor on every tick, node by node, which at a quiet tick cost
more than evaluating. docs/internals.md lists the private names;
tests/test_internals_guard.py guards them.
"""

import base64
import binascii
import dataclasses
import hashlib
import weakref
import zlib

import dagster as dg
from dagster import AssetKey, AutomationCondition
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView
from dagster._core.definitions.declarative_automation.automation_condition import (
    BuiltinAutomationCondition,
)
from dagster._core.definitions.declarative_automation.serialized_objects import (
    AutomationConditionCursor,
)
from dagster._core.events import EVENT_TYPE_TO_PIPELINE_RUN_STATUS
from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus
from dagster._core.storage.event_log.base import AssetRecord
from dagster._record import record

from dbt_automation_demo.internals.check_executions import latest_check_executions

# Nodes whose inputs are the asset's and its parents' events, runs and checks, its own cursor,
# its parents' requests, its code version, and a cron: Dagster's own, and this project's.
KNOWN_NODES = frozenset(
    {
        "AndAutomationCondition",
        "AnyDepsCondition",
        "BackfillInProgressAutomationCondition",
        "CodeVersionChangedCondition",
        "CronTickPassedCondition",
        "MissingAutomationCondition",
        "NewlyRequestedCondition",
        "NewlyTrueCondition",
        "NewlyUpdatedCondition",
        "NotAutomationCondition",
        "OrAutomationCondition",
        "RunInProgressAutomationCondition",
        "SinceCondition",
        "WillBeRequestedCondition",
        "AnyParentUpdated",
        "ParentFailed",
        "RunningAtLastTick",
        "SafeToRun",
        "SinceLastRequested",
        "SkippedAfterUpstreamFailed",
        "SkippedSinceLastRequested",
    }
)
ASSET_EVENTS = (
    dg.DagsterEventType.ASSET_MATERIALIZATION,
    dg.DagsterEventType.ASSET_OBSERVATION,
    dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
    dg.DagsterEventType.ASSET_FAILED_TO_MATERIALIZE,
)
RUN_STATUS_EVENTS = tuple(EVENT_TYPE_TO_PIPELINE_RUN_STATUS)
# Past this many events of one type since the previous tick, every asset is evaluated.
EVENTS_READ_PER_TICK = 9_999
FIXED, MOVED = "fixed", "moved"


@record
class EvaluatedOnChange(BuiltinAutomationCondition):
    """The policy, evaluated only when something it reads may have changed (module docstring);
    at the root of the asset's condition (elsewhere it always evaluates the policy)."""

    condition: AutomationCondition

    @property
    def name(self) -> str:
        return "evaluated when something it reads changed"

    @property
    def description(self) -> str:
        return (
            "Evaluated only when an event, a run, a check, a cron tick, a code version or a "
            "parent's request may change it; otherwise its last evaluation stands."
        )

    @property
    def children(self) -> list[AutomationCondition]:
        return [self.condition]

    async def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        if context.parent_context is not None:  # not the root: the policy, as it is
            child = await self._evaluate_policy(context)
            return dg.AutomationResult(context, child.true_subset, child_results=[child])
        previous = context._cursor  # the asset's cursor (private, guarded)
        signature = _signature(context, self.condition)
        flag, before_signature, packed_before = _unpack(context.cursor)
        quiet = previous is not None and before_signature == signature
        quiet = quiet and _quiet(context, self.condition, previous)
        if quiet and flag == FIXED:
            return CarriedForward(context, previous)
        unpacked = _unpacked(packed_before) if previous is not None and packed_before else None
        if unpacked is not None:
            # The policy's own nodes read their cursors as Dagster stored them.
            context = dataclasses.replace(
                context, _cursor=dataclasses.replace(previous, node_cursors_by_unique_id=unpacked)
            )
        child = await self._evaluate_policy(context)
        node_cursors = child.get_child_node_cursors()
        # Cursors equal to the ones read keep their string: serializing them is most of packing.
        packed = packed_before if node_cursors == unpacked else _packed(node_cursors)
        fixed = quiet and child.true_subset.is_empty and packed == packed_before
        return Packed(
            context,
            child.true_subset,
            cursor=f"{FIXED if fixed else MOVED} {signature} {packed}",
            child_results=[child],
        )

    async def _evaluate_policy(self, context: dg.AutomationContext) -> dg.AutomationResult:
        return await context.for_child_condition(
            self.condition, child_indices=[0], candidate_subset=context.candidate_subset
        ).evaluate_async()


def _packed(node_cursors: dict) -> str:
    """The node cursors in one short string: serialized, compressed (one policy at 100
    models: 512 characters instead of 2,352, which Dagster writes and encodes on every tick),
    base64 (base85 is written in Python: decoding it took a tenth of a busy tick)."""
    return base64.b64encode(zlib.compress(dg.serialize_value(node_cursors).encode(), 1)).decode()


def _unpacked(packed: str) -> dict | None:
    """The node cursors `_packed` stored, or None for a string it did not write (an earlier
    version's packing): the policy's nodes then start without cursors, as Dagster starts those
    of a condition whose structure changed."""
    try:
        compressed = base64.b64decode(packed, validate=True)
        return dg.deserialize_value(zlib.decompress(compressed).decode(), dict)
    except (binascii.Error, zlib.error, ValueError):
        return None


def _unpack(cursor: str | None) -> tuple[str | None, str | None, str | None]:
    """The previous evaluation's flag, signature and packed node cursors, if it stored them."""
    parts = (cursor or "").split(" ", 2)
    return tuple(parts) if len(parts) == 3 else (None, None, None)


class Packed(dg.AutomationResult):
    """A full evaluation whose nodes' cursors are stored in one string, in the root's: Dagster
    serializes the sensor's cursor on every tick, node by node, and a string costs it one."""

    def get_child_node_cursors(self) -> dict:
        return {self.condition_unique_id: self.node_cursor}


class CarriedForward(dg.AutomationResult):
    """The previous evaluation, unchanged: nothing requested, the same cursor and result hash
    (so Dagster stores no new evaluation record), this tick's time and event id."""

    def __init__(self, context: dg.AutomationContext, previous: AutomationConditionCursor):
        super().__init__(context, context.get_empty_subset())
        self._previous = previous

    @property
    def value_hash(self) -> str:
        return self._previous.result_value_hash

    def get_child_node_cursors(self) -> dict:
        return dict(self._previous.node_cursors_by_unique_id)

    def get_new_cursor(self) -> AutomationConditionCursor:
        return dataclasses.replace(
            self._previous,
            effective_timestamp=self._context.evaluation_time.timestamp(),
            last_event_id=self._context.max_storage_id,
        )


def _quiet(
    context: dg.AutomationContext,
    condition: dg.AutomationCondition,
    previous: AutomationConditionCursor,
) -> bool:
    """Nothing else the policy reads may have changed since its previous evaluation (its
    signature is compared with the cursor's)."""
    crons = _crons(condition)
    if crons is None or not previous.previous_requested_subset.is_empty:
        return False
    view = context.asset_graph_view
    changed = changed_since(view, previous.last_event_id or 0)
    if changed is None or changed & _watched(context.asset_graph, context.key):
        return False
    if any(_tick_passed(context, cron, timezone) for cron, timezone in crons):
        return False
    return not _backfilling(view) and not _a_parent_requested(context)


def _a_parent_requested(context: dg.AutomationContext) -> bool:
    """A parent is requested on this tick (its request on the previous tick was an input of the
    previous evaluation, which then was no fixed point)."""
    for parent in context.asset_graph.get(context.key).parent_entity_keys:
        requested = context.request_subsets_by_key.get(parent)
        if requested is not None and not requested.is_empty:
            return True
    return False


def _tick_passed(context: dg.AutomationContext, cron: str, timezone: str) -> bool:
    # As Dagster's cron_tick_passed(): a tick at the previous evaluation's very time counts.
    tick = context.asset_graph_view.compute_previous_cron_tick(
        cron_schedule=cron, cron_timezone=timezone
    )
    return tick >= context.previous_evaluation_time


def evaluated_every_tick(condition: dg.AutomationCondition) -> dg.AutomationCondition:
    """The policy without this root (the benchmark's and the differential test's other side)."""
    if isinstance(condition, EvaluatedOnChange):
        return condition.condition.with_label(condition.get_label())
    return condition


def is_fixed_point(cursor: AutomationConditionCursor) -> bool:
    """The entity's evaluation that left this cursor is carried forward on a tick on which
    nothing it reads changed: its root is this one, and it was a fixed point."""
    node_cursors = list(cursor.node_cursors_by_unique_id.values())
    if len(node_cursors) != 1 or node_cursors[0] is None:
        return False
    return _unpack(node_cursors[0].get_structured_cursor(str))[0] == FIXED


def crons_read_by(condition: dg.AutomationCondition | None) -> tuple[tuple[str, str], ...]:
    """The crons a policy evaluated only on change reads (none for any other condition)."""
    if not isinstance(condition, EvaluatedOnChange):
        return ()
    return _crons(condition.condition) or ()


def only_known_nodes(condition: dg.AutomationCondition) -> bool:
    """Every node of the policy is one whose inputs this module knows."""
    return _crons(condition) is not None


def _crons(condition: dg.AutomationCondition) -> tuple[tuple[str, str], ...] | None:
    """The crons the policy reads, or None if it has a node whose inputs are not known."""
    return _per_policy(condition)[0]


# Per policy object (the policies are built once and shared): a condition's hash walks its
# whole tree, which cost a quiet tick more than everything else this module does.
_by_policy: dict[int, tuple] = {}


def _per_policy(condition: dg.AutomationCondition) -> tuple:
    """The policy's crons (None: a node whose inputs are not known) and digest."""
    if id(condition) not in _by_policy:
        _by_policy[id(condition)] = (_read_crons(condition), _digest(repr(condition)), condition)
    return _by_policy[id(condition)]


def _read_crons(condition: dg.AutomationCondition) -> tuple[tuple[str, str], ...] | None:
    crons, pending = set(), [condition]
    while pending:
        node = pending.pop()
        if type(node).__name__ not in KNOWN_NODES:
            return None
        # By name, as KNOWN_NODES: conditions.py imports this project's memory of failed runs,
        # which reads this module's change set, so this module cannot import conditions.py.
        if type(node).__name__ in ("RunningAtLastTick", "CronTickPassedCondition"):
            crons.add((node.cron_schedule, node.cron_timezone))
        pending.extend(node.children)
    return tuple(sorted(crons))


def _watched(graph, key) -> frozenset[AssetKey]:
    """The assets whose events and runs the entity's policy reads: itself (a check: its asset)
    and its parents."""
    return _static(graph, key)[0]


def _signature(context: dg.AutomationContext, condition: dg.AutomationCondition) -> str:
    """What the previous evaluation must have seen: the policy, the code version, the parents,
    the latest events of the asset and its parents, and the latest executions of the checks
    the policy reads (its parents' and its own blocking checks; a check's own)."""
    watched, static = _static(context.asset_graph, context.key)
    view = context.asset_graph_view
    latest = []
    for key in sorted(watched):
        asset = AssetRecord.blocking_get(view, key)
        latest.append(asset.asset_entry.last_event_storage_id if asset else None)
    executions = _latest_check_executions(view)
    for check in _read_checks(context.asset_graph, context.key):
        execution = executions.get(check)
        latest.append((execution.id, execution.status.value) if execution else None)
    return _digest(f"{_per_policy(condition)[1]} {static} {latest}")


def _latest_check_executions(view: AssetGraphView) -> dict:
    """Once per tick, in one query: the latest execution of every check a policy reads (what
    each check's summary record holds; read one summary at a time, they were a query each, 28
    on every tick of the demo and three quarters of a quiet one)."""
    cache = tick_cache(view)
    if "check executions" not in cache:
        checks = _checks_read_by_any_policy(view.asset_graph)
        cache["check executions"] = latest_check_executions(view.instance, checks)
    return cache["check executions"]


def _checks_read_by_any_policy(graph) -> list:
    """Per asset graph: every check whose executions some entity's policy reads."""
    by_key = _static_by_graph.setdefault(graph, {})
    if "checks read" not in by_key:
        entities = [*graph.get_all_asset_keys(), *graph.asset_check_keys]
        read = {
            check
            for key in entities
            if graph.get(key).automation_condition is not None
            for check in _read_checks(graph, key)
        }
        by_key["checks read"] = sorted(read, key=str)
    return by_key["checks read"]


_static_by_graph: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _static(graph, key) -> tuple[frozenset[AssetKey], str]:
    """Per asset graph (built once per definitions load): the watched assets, and a digest of
    the entity's code version and of its parents (kinds, blocking checks)."""
    by_key = _static_by_graph.setdefault(graph, {})
    if key not in by_key:
        node = graph.get(key)
        asset = key if isinstance(key, AssetKey) else key.asset_key
        parents = sorted(node.parent_entity_keys, key=str)
        described = [
            (
                str(parent),
                graph.get(parent).is_materializable,
                graph.get(parent).is_observable,
                sorted(str(c) for c in _checks_of(graph, parent) if graph.get(c).blocking),
            )
            for parent in parents
            if graph.has(parent)
        ]
        own = getattr(node, "code_version", None) if isinstance(key, AssetKey) else None
        watched = frozenset({asset} | {p for p in parents if isinstance(p, AssetKey)})
        by_key[key] = (watched, _digest(repr((str(key), own, described))))
    return by_key[key]


def _checks_of(graph, key) -> list:
    return sorted(graph.get(key).check_keys, key=str) if graph.has(key) else []


def _read_checks(graph, key) -> list:
    """The checks whose executions the entity's policy reads: the blocking checks of the asset
    and of its parents (the test gate), and a check's own (`missing()`, `in_progress()`)."""
    by_key = _static_by_graph.setdefault(graph, {})
    if ("checks", key) not in by_key:
        watched = _static(graph, key)[0]
        checks = [check for asset in sorted(watched) for check in _checks_of(graph, asset)]
        blocking = [check for check in checks if graph.get(check).blocking]
        by_key[("checks", key)] = blocking + ([] if isinstance(key, AssetKey) else [key])
    return by_key[("checks", key)]


def _digest(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()[:16]


# Per tick (one AssetGraphView per evaluation of a sensor).
_per_tick: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tick_cache(view: AssetGraphView) -> dict:
    return _per_tick.setdefault(view, {})


def _backfilling(view: AssetGraphView) -> bool:
    cache = tick_cache(view)
    if "backfilling" not in cache:
        cache["backfilling"] = backfill_in_progress(view.instance)
    return cache["backfilling"]


def backfill_in_progress(instance: dg.DagsterInstance) -> bool:
    """A backfill is requested or being cancelled (every policy is then evaluated)."""
    in_progress = [BulkActionStatus.REQUESTED, BulkActionStatus.CANCELING]
    return bool(instance.get_backfills(filters=BulkActionsFilter(statuses=in_progress), limit=1))


def changed_since(view: AssetGraphView, event_id: int) -> frozenset[AssetKey] | None:
    """The assets an event touched after `event_id` (up to this tick's last event), and those
    targeted by a run whose status changed; None for "any" (a run without an asset selection,
    or too many events)."""
    cache = tick_cache(view).setdefault("changed", {})
    if event_id not in cache:
        cache[event_id] = _read_changes(view, event_id)
    return cache[event_id]


def _read_changes(view: AssetGraphView, event_id: int) -> frozenset[AssetKey] | None:
    if view.last_event_id is None or view.last_event_id <= event_id:
        return frozenset()
    instance, before = view.instance, view.last_event_id + 1
    changed: set[AssetKey] = set()
    for event_type in ASSET_EVENTS:
        records = instance.event_log_storage.get_event_records(
            dg.EventRecordsFilter(event_type, after_cursor=event_id, before_cursor=before),
            limit=EVENTS_READ_PER_TICK + 1,
        )
        if len(records) > EVENTS_READ_PER_TICK:
            return None
        changed.update(record.asset_key for record in records)
    run_ids: set[str] = set()
    for event_type in RUN_STATUS_EVENTS:
        records = instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(
                event_type=event_type, after_storage_id=event_id, before_storage_id=before
            ),
            limit=EVENTS_READ_PER_TICK + 1,
        ).records
        if len(records) > EVENTS_READ_PER_TICK:
            return None
        run_ids.update(record.run_id for record in records)
    for run in instance.get_runs(dg.RunsFilter(run_ids=sorted(run_ids))) if run_ids else []:
        if run.asset_selection is None and run.asset_check_selection is None:
            return None
        changed.update(run.asset_selection or ())
        changed.update(check.asset_key for check in run.asset_check_selection or ())
    return frozenset(changed)
