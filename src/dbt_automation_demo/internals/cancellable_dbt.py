"""A dbt build inside a Dagster step that a cancel really stops, on DuckDB.

Dagster cancels a run by raising an interrupt in the step's main thread. With `include_metadata`,
dagster-dbt (0.29) reads dbt's output in a worker thread, while the main thread polls a Future in
a loop that never sleeps. So the interrupt lands in that loop:

- dagster-dbt's handler that forwards it to dbt as SIGINT is in the worker thread, so it never
  runs, and dbt builds on to the end;
- when it lands while the loop holds the Future's lock, the lock stays held. The worker thread
  blocks on that lock as it finishes, the main thread waits for the worker thread forever, and
  the run stays CANCELING, its step holding the DuckDB file (py-spy showed both threads there).

Here the main thread reads dbt's output itself, so a cancel reaches dbt at once. On DuckDB
dagster-dbt reads the row counts and column schemas only after dbt has ended anyway (the file has
one writer), so reading them afterwards, in a helper thread, changes nothing else. A cancel that
arrives while they are read waits for those few queries, then stops the step. Other warehouses
keep dagster-dbt's streaming path, which records each model as it finishes.

Reading them needs dbt's adapter, with dbt's macros, loaded in this process (1.5-2 s here), which
dagster-dbt does before it starts dbt. On DuckDB nothing reads through the adapter until dbt has
ended, so it is loaded in a helper thread while dbt builds, on the core dbt leaves free.

The metadata is then read one model after another in one helper thread (`dbt-metadata`).
dagster-dbt reads it in a thread pool per kind, each drained by a loop that polls without
sleeping: that loop holds the GIL, so each worker waits a whole switch interval (5 ms) to get it
back after every DuckDB query. For the demo's seven assets that took 1.0-1.2 s; read one after
another, 0.1-0.2 s, the same metadata.
"""

import logging
import signal
import subprocess
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import dagster as dg
from dagster._utils import pushd
from dagster_dbt import DbtCliResource
from dagster_dbt.core.dbt_cli_invocation import DbtCliInvocation
from dagster_dbt.core.dbt_event_iterator import (
    DbtDagsterEventType,
    DbtEventIterator,
    _fetch_column_metadata,
    _fetch_row_count_metadata,
)

logger = logging.getLogger(__name__)


def dbt_events(
    dbt: DbtCliResource,
    args: Sequence[str],
    context: dg.AssetExecutionContext,
    include_metadata: Iterable[str],
) -> Iterator[Any]:
    """The Dagster events of the dbt command `args`, each with the metadata asked for, as
    `DbtProjectComponent.execute` yields them, but stopped for real by a cancel on DuckDB."""
    if _adapter_type(context) != "duckdb":
        # Other warehouses: dagster-dbt's path, which records each model as it finishes.
        return _with_metadata(dbt.cli(args, context=context).stream(), include_metadata)
    load_no_adapter(dbt)
    invocation = dbt.cli(args, context=context)
    # Started after dbt.cli() has returned: the load changes the working directory, as
    # dbt.cli() does around it, and the main thread does not change it again until the end.
    adapter = _AdapterLoad(dbt, args)
    return _build_then_describe(invocation, include_metadata, adapter)


def _adapter_type(context: dg.AssetExecutionContext) -> str:
    spec = next(iter(context.assets_def.specs))
    return spec.metadata["dagster_dbt/manifest"].manifest["metadata"]["adapter_type"]


def load_no_adapter(dbt: DbtCliResource) -> None:
    """The resource's commands load no dbt adapter in this process (dagster-dbt loads one
    before every command, to fetch metadata through it)."""
    dbt.__dict__["_initialize_dbt_core_adapter"] = lambda args: None


class _AdapterLoad(threading.Thread):
    """dagster-dbt's in-process dbt adapter for `dbt`'s project, loaded in a helper thread."""

    def __init__(self, dbt: DbtCliResource, args: Sequence[str]):
        super().__init__(name="dbt-adapter", daemon=True)
        self.dbt, self.args = dbt, args
        self.adapter, self.failure = None, None
        self.start()

    def run(self) -> None:
        try:
            with pushd(str(self.dbt.project_dir)):
                self.adapter = DbtCliResource._initialize_dbt_core_adapter(self.dbt, self.args)
        except Exception as failure:  # as dagster-dbt: the run goes on, without metadata
            self.failure = failure

    def result(self) -> Any:
        self.join()
        if self.failure is not None:
            logger.warning("Could not load the dbt adapter in Dagster.", exc_info=self.failure)
        return self.adapter


def _build_then_describe(
    invocation: DbtCliInvocation, include_metadata: Iterable[str], adapter: _AdapterLoad
) -> Iterator[Any]:
    """Whatever stopped dbt (a failed model, a cancelled run) is raised after the events of what
    dbt had finished, so the run's history records every model that was built."""
    built, stopped_by = _read_until_dbt_ends(invocation)

    def described() -> Iterator[Any]:
        invocation.adapter = adapter.result()
        events = _one_after_another(built, invocation, include_metadata)
        if "insights" in include_metadata:  # for DuckDB dagster-dbt only warns it has none
            events = DbtEventIterator(events, invocation).with_insights()
        yield from events

    events, interrupted = _read_in_a_thread(described())
    yield from events
    if stopped_by is not None or interrupted is not None:
        raise stopped_by or interrupted


def _read_until_dbt_ends(invocation: DbtCliInvocation) -> tuple[list[Any], BaseException | None]:
    built: list[Any] = []
    try:
        built.extend(invocation.stream())
    except BaseException as stopped_by:  # a failed dbt command, or the run's cancel
        _stop(invocation.process, invocation.termination_timeout_seconds)
        return built, stopped_by
    return built, None


def _stop(dbt: subprocess.Popen, grace_seconds: float) -> None:
    """SIGINT, as dbt expects to be cancelled (it cancels its open queries), then SIGKILL."""
    if dbt.poll() is not None:
        return
    dbt.send_signal(signal.SIGINT)
    try:
        dbt.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        dbt.kill()
        dbt.wait()


def _with_metadata(events: DbtEventIterator, include_metadata: Iterable[str]) -> DbtEventIterator:
    """dagster-dbt's metadata fetch, chained in `DbtProjectComponent`'s order."""
    if "column_metadata" in include_metadata:
        events = events.fetch_column_metadata()
    if "row_count" in include_metadata:
        events = events.fetch_row_counts()
    if "insights" in include_metadata:
        events = events.with_insights()
    return events


def _one_after_another(
    events: Iterable[DbtDagsterEventType],
    invocation: DbtCliInvocation,
    include_metadata: Iterable[str],
) -> Iterator[DbtDagsterEventType]:
    """Each event with the metadata dagster-dbt's fetches attach to it (`_with_metadata`'s),
    fetched in this thread, one event after another (see the module's docstring for why)."""
    fetches = []
    if "column_metadata" in include_metadata:
        fetches.append(lambda event: _fetch_column_metadata(invocation, event, True))
    if "row_count" in include_metadata:
        fetches.append(lambda event: _fetch_row_count_metadata(invocation, event))
    for event in events:
        fetched = {}
        for fetch in fetches:
            fetched.update(fetch(event) or {})
        yield event.with_metadata({**event.metadata, **fetched}) if fetched else event


def _read_in_a_thread(events: Iterator[Any]) -> tuple[list[Any], BaseException | None]:
    """All of `events`, read in a helper thread so that an interrupt never lands inside the
    metadata fetch (its queries, or dagster-dbt's thread pool), and the interrupt that arrived
    meanwhile, if any."""
    read: list[Any] = []
    failed: list[BaseException] = []

    def read_all() -> None:
        try:
            read.extend(events)
        except BaseException as error:
            failed.append(error)

    reader = threading.Thread(target=read_all, name="dbt-metadata")
    reader.start()
    interrupted = None
    while reader.is_alive():
        try:
            reader.join()  # Thread.join is safe to interrupt (it releases what it acquired)
        except BaseException as interrupt:
            interrupted = interrupt
    if failed:
        raise failed[0]
    return read, interrupted
