"""Whether an asset's latest run failed before materializing it, remembered by a sensor from
one tick to the next: the test gate's (``ParentFailed``) one query per parent, with the speedups.

Dagster answers it (``compute_execution_failed_subset``) with a query for the asset's latest
planned materialization that no loader batches or caches: on a tick where new data landed, it
was a sixth of the tick at 100 models, asked about every parent of every asset the tick would
otherwise request, though almost none of those parents had changed. The answer is a function of
the asset's latest planned materialization, the status of that run, and the asset's
materializations, so it stands while all of this holds (``tests/test_differential.py``
evaluates the shipped sensor, which remembers, beside the policies evaluated on every tick,
which do not, and the requests are equal; its
``test_the_sensor_holds_a_view_back_by_a_failed_run_until_its_parent_is_built`` makes the
sensor answer from memory, then forget):

- no event touched the asset since the tick that answered (a materialization, an observation, a
  planned or failed materialization) and no run targeting it changed status (queued, started,
  ended): ``changed_since``, the change set the tick reads once anyway; a run without an asset
  selection, or too many events, forgets every answer;
- the asset's record (the batched read the tick makes anyway) has the same latest event ids and
  run: a wipe, which leaves no event, changes it.

The memory is the code server's, one per sensor and instance (a sensor's ticks are evaluated one
after another), set around the sensor's evaluation by ``SkipsQuietTicks``; anything evaluated
outside it (``evaluate_automation_conditions``, the stock sensor) asks Dagster every time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView
from dagster._core.storage.event_log.base import AssetRecord

from dbt_automation_demo.internals.what_changed import changed_since, tick_cache

# The sensor (and instance) being evaluated in this context, set by `remembered_by`.
_sensor: ContextVar[tuple[str, str] | None] = ContextVar("latest_runs_sensor", default=None)


@dataclass
class _Memory:
    """A sensor's answers, each with the asset record it was given for, and the event id up to
    which the changes since are known."""

    as_of: int
    failed: dict[dg.AssetKey, tuple[tuple, bool]] = field(default_factory=dict)


_memories: dict[tuple[str, str], _Memory] = {}
_lock = threading.Lock()


@contextmanager
def remembered_by(sensor_key: tuple[str, str] | None) -> Iterator[None]:
    """Inside the block, answers are remembered for this sensor (None: not remembered)."""
    token = _sensor.set(sensor_key)
    try:
        yield
    finally:
        _sensor.reset(token)


async def latest_run_failed(view: AssetGraphView, key: dg.AssetKey) -> bool:
    """The asset's latest run failed before materializing it (any partition of it)."""
    memory = _memory_for(view)
    if memory is None:
        return await _asked(view, key)
    record = _record_of(view, key)
    known = memory.failed.get(key)
    if known is not None and known[0] == record:
        return known[1]
    failed = await _asked(view, key)
    memory.failed[key] = (record, failed)
    return failed


async def _asked(view: AssetGraphView, key: dg.AssetKey) -> bool:
    everything = view.get_full_subset(key=key)
    failed = await view.compute_execution_failed_subset(key=key, from_subset=everything)
    return not failed.is_empty


def _record_of(view: AssetGraphView, key: dg.AssetKey) -> tuple:
    # The blocking loader's cache holds the records the tick loaded for every asset at once
    # (the async loader's is another, which would query one asset at a time).
    record = AssetRecord.blocking_get(view, key)
    if record is None:
        return (None,)
    entry = record.asset_entry
    return (entry.last_event_storage_id, entry.last_run_id)


def _memory_for(view: AssetGraphView) -> _Memory | None:
    """The sensor's memory, brought up to this tick once per tick: the answers about assets
    changed since are forgotten."""
    sensor = _sensor.get()
    if sensor is None or view.last_event_id is None:
        return None
    cache = tick_cache(view)
    if "latest_runs" not in cache:
        with _lock:
            cache["latest_runs"] = _brought_up_to(view, _memories.get(sensor))
            _memories[sensor] = cache["latest_runs"]
    return cache["latest_runs"]


def _brought_up_to(view: AssetGraphView, memory: _Memory | None) -> _Memory:
    last_event_id = view.last_event_id
    if memory is None or memory.as_of > last_event_id:
        return _Memory(as_of=last_event_id)
    changed = changed_since(view, memory.as_of)
    if changed is None:
        return _Memory(as_of=last_event_id)
    for key in changed & memory.failed.keys():
        del memory.failed[key]
    memory.as_of = last_event_id
    return memory
