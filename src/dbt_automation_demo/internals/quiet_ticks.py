"""Skip a tick on which nothing happened: the automation sensor's evaluation, with the speedups.

``EvaluatedOnChange`` carries an asset's last evaluation forward when nothing its policy reads
changed, but Dagster still builds a context for every asset, evaluates every root, and
serializes and compresses the whole sensor cursor on every tick; at a quiet tick that is
nearly all the time left. ``SkipsQuietTicks`` is the sensor with Dagster's own evaluation
(``_evaluate`` in ``dagster._core.definitions.automation_condition_sensor_definition``,
copied: it builds the tick's cursor, which this module reads) and one shortcut before it.

A tick is skipped (no evaluation, nothing requested, no evaluation stored, the cursor returned
as it came) when all of this holds; it then is the tick the evaluation would have been, one
that carries every entity forward (``tests/test_differential.py`` evaluates through the sensor
beside the policies evaluated on every tick, on random instance states, and the requests are
equal):

- this process evaluated the sensor's previous unskipped tick, on the same instance, and the
  cursor it returned is the one the sensor has now (the daemon stored it; nobody reset it);
- that tick requested nothing and left every entity at a fixed point (``is_fixed_point``:
  carried forward, or evaluated to what it was, on a tick as quiet as this one);
- the definitions are the same object (a reload, a new code version, makes new ones);
- the event log has no event since that tick began: no materialization, observation, check
  result, wipe, or run that was queued, started or ended, of any asset;
- no tick of a cron any of the sensor's policies reads has passed since that tick began;
- no backfill is in progress.

What a skipped tick leaves differs from what the evaluation would have left only in the time
each entity's cursor says it was last evaluated: the skipped tick's, against the last
evaluated one's. Between the two no event was stored and no cron ticked, and that time is only
read to find the events and cron ticks since (a request's time is read too, and nothing was
requested).

The memory is the code server's (one process evaluates a sensor for as long as its definitions
are loaded); a new process evaluates its first tick in full. docs/internals.md lists the
private names; tests/test_internals_guard.py guards them.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from dataclasses import dataclass
from datetime import datetime
from functools import partial

import dagster as dg
from dagster._core.definitions.asset_daemon_cursor import AssetDaemonCursor
from dagster._core.definitions.automation_condition_sensor_definition import MAX_ENTITIES
from dagster._core.definitions.automation_tick_evaluation_context import (
    AutomationTickEvaluationContext,
)
from dagster._core.definitions.declarative_automation.serialized_objects import (
    AutomationConditionCursor,
)
from dagster._core.definitions.sensor_definition import wrap_sensor_evaluation
from dagster._daemon.asset_daemon import (
    asset_daemon_cursor_from_instigator_serialized_cursor,
    asset_daemon_cursor_to_instigator_serialized_cursor,
)
from dagster._time import get_current_datetime

from dbt_automation_demo.internals.dagster_names import reverse_cron_string_iterator
from dbt_automation_demo.internals.latest_runs import remembered_by
from dbt_automation_demo.internals.what_changed import (
    backfill_in_progress,
    crons_read_by,
    is_fixed_point,
)


class SkipsQuietTicks(dg.AutomationConditionSensorDefinition):
    """An automation sensor evaluated in the code server that skips a tick on which nothing
    happened after one that carried every entity forward (module docstring)."""

    def __init__(self, name: str, **kwargs) -> None:
        super().__init__(name, use_user_code_server=True, **kwargs)
        evaluate = partial(evaluate_skipping_quiet_ticks, self)
        self._raw_fn = evaluate
        self._evaluation_fn = wrap_sensor_evaluation(self.name, evaluate)

    def with_attributes(self, *, jobs=None, metadata=None) -> SkipsQuietTicks:
        # Dagster's copy (Definitions updates sensors' metadata) would make its own class.
        return SkipsQuietTicks(
            self.name,
            target=self.asset_selection,
            tags=self.tags,
            run_tags=self.run_tags,
            default_status=self.default_status,
            minimum_interval_seconds=self.minimum_interval_seconds,
            description=self.description,
            metadata=self.metadata if metadata is None else metadata,
            emit_backfills=self.emit_backfills,
            default_condition=self.default_condition,
        )


@dataclass(frozen=True)
class _FixedPoint:
    """A tick on which every entity of the sensor was left at a fixed point."""

    cursor: str  # as the sensor returned it
    definitions: weakref.ref  # the asset graph it was evaluated with
    last_event_id: int | None  # the event log's, as the tick began
    began: datetime
    crons: tuple[tuple[str, str], ...]  # every cron the sensor's policies read


_fixed_points: dict[tuple[str, str], _FixedPoint] = {}
_lock = threading.Lock()


def evaluate_skipping_quiet_ticks(
    sensor: dg.AutomationConditionSensorDefinition, context: dg.SensorEvaluationContext
) -> dg.SensorResult:
    """Dagster's evaluation of the sensor, or nothing when the tick is a quiet one."""
    instance, now = context.instance, get_current_datetime()
    asset_graph = context.repository_def.asset_graph
    key = _memory_key(sensor, instance)
    with _lock:
        previous = _fixed_points.pop(key, None) if key else None
    last_event_id = instance.event_log_storage.get_maximum_record_id()
    if previous is not None and _nothing_happened(previous, context, last_event_id, now):
        with _lock:
            _fixed_points[key] = previous
        return dg.SensorResult(cursor=context.cursor)
    with remembered_by(key):  # the test gate's answers about parents' latest runs
        run_requests, cursor, evaluations = _evaluate(sensor, context)
    serialized = asset_daemon_cursor_to_instigator_serialized_cursor(cursor)
    entities = _evaluated_on_the_tick(cursor)
    if key and not run_requests and entities and all(map(is_fixed_point, entities)):
        crons = _crons(asset_graph, entities)
        fixed = _FixedPoint(serialized, weakref.ref(asset_graph), last_event_id, now, crons)
        with _lock:
            _fixed_points[key] = fixed
    return dg.SensorResult(
        run_requests=run_requests, cursor=serialized, automation_condition_evaluations=evaluations
    )


def _evaluate(sensor: dg.AutomationConditionSensorDefinition, context: dg.SensorEvaluationContext):
    """Dagster's `_evaluate`, up to the cursor it serializes (guarded against changes)."""
    asset_graph = context.repository_def.asset_graph
    cursor = asset_daemon_cursor_from_instigator_serialized_cursor(context.cursor, asset_graph)
    evaluation_context = AutomationTickEvaluationContext(
        evaluation_id=cursor.evaluation_id,
        instance=context.instance,
        asset_graph=asset_graph,
        cursor=cursor,
        materialize_run_tags=sensor.run_tags,
        observe_run_tags={},
        auto_observe_asset_keys=set(),
        asset_selection=sensor.asset_selection,
        asset_job_keys=sensor.asset_job_keys,
        emit_backfills=sensor.emit_backfills,
        default_condition=sensor.default_condition,
        logger=context.log,
    )
    if evaluation_context.total_keys > MAX_ENTITIES:
        raise dg.DagsterInvalidInvocationError(
            f'AutomationConditionSensorDefinition "{sensor.name}" targets '
            f"{evaluation_context.total_keys} assets or checks, which is more than the limit "
            f"of {MAX_ENTITIES}. Split it into several sensors."
        )
    return evaluation_context.evaluate()


def _memory_key(
    sensor: dg.AutomationConditionSensorDefinition, instance: dg.DagsterInstance
) -> tuple[str, str] | None:
    """The sensor on this instance (its storage's configuration); None for an instance without
    one (an ephemeral one), whose ticks are always evaluated."""
    if instance.is_ephemeral:
        return None
    ref = dg.serialize_value(instance.get_ref())
    digest = hashlib.md5(ref.encode(), usedforsecurity=False).hexdigest()
    return (digest, sensor.name)


def _nothing_happened(
    previous: _FixedPoint,
    context: dg.SensorEvaluationContext,
    last_event_id: int | None,
    now: datetime,
) -> bool:
    return (
        context.cursor == previous.cursor
        and previous.definitions() is context.repository_def.asset_graph
        and last_event_id == previous.last_event_id
        and now >= previous.began
        and not any(_tick_passed(cron, zone, previous.began, now) for cron, zone in previous.crons)
        and not backfill_in_progress(context.instance)
    )


def _evaluated_on_the_tick(cursor: AssetDaemonCursor) -> list[AutomationConditionCursor]:
    """The cursors of the entities the tick evaluated (the sensor's cursor also keeps those of
    entities it no longer targets, with the time they were last evaluated)."""
    entities = cursor.previous_condition_cursors or []
    latest = max((entity.effective_timestamp for entity in entities), default=None)
    return [entity for entity in entities if entity.effective_timestamp == latest]


def _crons(asset_graph, entities: list[AutomationConditionCursor]) -> tuple[tuple[str, str], ...]:
    """Every cron the entities' policies read."""
    crons = set()
    for entity in entities:
        crons.update(crons_read_by(asset_graph.get(entity.key).automation_condition))
    return tuple(sorted(crons))


def _tick_passed(cron: str, timezone: str, since: datetime, now: datetime) -> bool:
    """A tick at or after `since`, up to `now` (as Dagster's `cron_tick_passed()` counts one
    at the previous evaluation's very time)."""
    latest = next(reverse_cron_string_iterator(now.timestamp(), cron, timezone))
    return latest >= since
