"""The README's behaviour table as a small, pure-Python model: what each tick must request.

It knows nothing of Dagster. It is told what happened between two ticks (runs that started or
ended and what they built, SQL edits, models added) and answers, for the next tick, exactly
which assets the policies must request:

Views (refresh on SQL change or parent update):
- a trigger is an edit of its SQL, a parent built by a run that did not also target the view,
  or a parent requested on this same tick; a trigger waits until it is spent;
- only a request spends a trigger, and only the triggers that came before it: one that arrives
  between a request and the next tick is kept;
- a view that becomes missing (a model just added) waits to be requested once, until it is
  requested or built;
- a view's first evaluation sees no edit and no parent update (nothing to compare with).

Everything else (refresh on cron):
- due once per cron tick that passes between two evaluations (never on the first one);
- a run of the asset in progress at that evaluation counts as the tick's refresh;
- a request spends the ticks before it, not one that passes between it and the next tick.

Both: requested only when not running, no parent running, and no parent missing unless that
parent is requested on the same tick (parents first, in dependency order). A failed run spends
nothing more than its request did: nothing is retried.

dbt sources (observed, never built): an observation that finds new data (a new data version,
or the first) is an update of the source, as a parent's build is; one that finds the same data
is nothing. A source never observed with data is missing.

Both, dbt's tests: never while a parent (not requested on the same tick) failed: the latest
result of one of its blocking tests is a failure on its latest build, or its latest run failed
without building it. A run that fails skips what is downstream of a failure in it (a failed
test, or a target it did not build); each asset it skipped so is due again (a trigger, as
above) from the next tick on.

A blocking test that reads more than one model (`relationships`, a singular test over several
models) is requested on its own, never while it or a model it reads runs, and only once every
model it reads exists (built, or requested on the same tick):
- with every request of a model it reads;
- or while it has no result since its model's latest build: a result is an evaluation after
  that build, or a run that planned it and ended (without running it: it was deferred, or the
  run failed first) and that started after the run of that build, or is that run.
A run plans the tests of its targets (a run by hand) or exactly the tests requested (the
sensor's); it runs one once every model the test reads is built, in the run or before.

Reuse (a node with dbt State's `state` config, `reuse.py`): what the rules above request is
requested only if the node was never built, or its code changed since its last build (an edit
after that build's run started), or it has new data since that build, from any parent (or
every parent, with `all`), and that build is at least its lag tolerance old at the tick's time
(runs happen just after the last tick, or the start).
A parent has new data when its latest build came after the node's last build's run started,
by another run, or an observation found new data since then, or it is requested on the same
tick, or it is a view and one of its parents has new data. A node held back so keeps its
triggers: only a request spends them.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

DAILY = "0 6 * * *"
EVERY_15_MINUTES = "*/15 * * * *"


@dataclass(frozen=True)
class Reuse:
    """dbt State's settings of a reusing node."""

    lag_tolerance: timedelta
    require_all: bool = False  # require_fresh_data_from: all


@dataclass(frozen=True)
class ModelAsset:
    name: str
    parents: frozenset[str]
    is_view: bool
    cron: str | None = None  # for everything but views
    reuse: Reuse | None = None


def latest_cron_tick(cron: str, at: datetime) -> datetime:
    """The last tick of `cron` at or before `at` (UTC), for the two crons the fuzz test uses."""
    at = at.replace(second=0, microsecond=0)
    if cron == EVERY_15_MINUTES:
        return at.replace(minute=at.minute - at.minute % 15)
    if cron == DAILY:
        today = at.replace(hour=6, minute=0)
        return today if today <= at else today - timedelta(days=1)
    raise ValueError(f"the model knows no cron {cron!r}")


@dataclass(frozen=True)
class ModelTest:
    """A blocking test on `model` that also reads other models (`reads` holds them all); its
    name is `model:test`."""

    name: str
    model: str
    reads: frozenset[str]


@dataclass
class _TestRecord:
    """The latest record of a test: planned in a run, then evaluated, or not (yet)."""

    run_id: str
    passed: bool | None = None  # None: not evaluated
    target: int | None = None  # the event of its model's latest build when it was evaluated


@dataclass
class _Evaluated:
    at: datetime
    event: int  # the number of events that had happened by then


@dataclass
class ReferenceModel:
    assets: dict[str, ModelAsset] = field(default_factory=dict)
    built: set[str] = field(default_factory=set)
    running: dict[str, frozenset[str]] = field(default_factory=dict)  # run id -> its targets
    last_planned_by: dict[str, str] = field(default_factory=dict)  # asset -> run id
    last_built: dict[str, tuple[int, frozenset[str]]] = field(default_factory=dict)
    last_run_of_build: dict[str, str] = field(default_factory=dict)  # asset -> run id
    edited: set[str] = field(default_factory=set)  # since the asset's last evaluation
    events: int = 0
    evaluated: dict[str, _Evaluated] = field(default_factory=dict)
    requested_last_tick: set[str] = field(default_factory=set)
    missing_last_tick: set[str] = field(default_factory=set)
    waiting_change: set[str] = field(default_factory=set)
    waiting_new: set[str] = field(default_factory=set)
    waiting_cron: set[str] = field(default_factory=set)
    waiting_skipped: set[str] = field(default_factory=set)
    failed_runs: dict[str, frozenset[str]] = field(default_factory=dict)  # run id -> built
    run_started_at: dict[str, int] = field(default_factory=dict)  # run id -> event
    tests: dict[str, ModelTest] = field(default_factory=dict)  # those on more than one model
    # "model:test" -> its records by run, oldest first (Dagster's latest is the last)
    test_records: dict[str, dict[str, _TestRecord]] = field(default_factory=dict)
    tests_planned: dict[str, frozenset[str]] = field(default_factory=dict)  # run id -> tests
    tests_requested: set[str] = field(default_factory=set)  # on the last tick
    skipped_by_run_ending: list[tuple[int, frozenset[str]]] = field(default_factory=list)
    clock: datetime | None = None  # the last tick's time, or the start: builds come just after
    code_edits: dict[str, int] = field(default_factory=dict)  # asset -> edits so far
    run_code: dict[str, dict[str, int]] = field(default_factory=dict)  # run id -> its targets'
    built_code: dict[str, int] = field(default_factory=dict)  # asset -> edits in its last build
    built_at: dict[str, datetime] = field(default_factory=dict)
    held_back: set[str] = field(default_factory=set)  # by reuse, on the last tick

    def define(self, assets: Iterable[ModelAsset], tests: Iterable[ModelTest] = ()) -> None:
        """The project now holds these assets (new ones have never been evaluated), and these
        tests on more than one model."""
        self.assets = {asset.name: asset for asset in assets}
        self.tests = {test.name: test for test in tests}

    def edit(self, name: str) -> None:
        self.edited.add(name)
        self.code_edits[name] = self.code_edits.get(name, 0) + 1

    def observed(self, source: str, new_data: bool) -> None:
        """An observation of a dbt source: with new data (or its first data), or the same."""
        self.events += 1
        if new_data or source not in self.built:
            self.built.add(source)
            self.last_built[source] = (self.events, frozenset())

    def tests_planned_by_hand(self, targets: Iterable[str]) -> set[str]:
        """The tests on more than one model that a run of `targets` started by hand plans: those
        on its targets."""
        return {test.name for test in self.tests.values() if test.model in targets}

    def run_started(
        self, run_id: str, targets: Iterable[str], tests: Iterable[str] | None = None
    ) -> None:
        """A run of `targets` starts, planning `tests` (by default, as a run by hand does)."""
        self.running[run_id] = frozenset(targets)
        for name in targets:
            self.last_planned_by[name] = run_id
        self.run_code[run_id] = {name: self.code_edits.get(name, 0) for name in targets}
        self.events += 1
        self.run_started_at[run_id] = self.events
        planned = self.tests_planned_by_hand(targets) if tests is None else set(tests)
        self.tests_planned[run_id] = frozenset(planned)
        for test in planned:
            self.test_records.setdefault(test, {})[run_id] = _TestRecord(run_id)

    def tests_that_run(self, run_id: str, built: Iterable[str]) -> set[str]:
        """The tests the run planned that ran: every model each reads is built, in the run (if
        the run targets it) or before."""
        targets, built = self.running[run_id], set(built)
        return {
            test
            for test in self.tests_planned[run_id]
            if all(
                name in built if name in targets else name in self.built
                for name in self.tests[test].reads
            )
        }

    def run_ended(
        self, run_id: str, built: Sequence[str], failed_tests: Iterable[str] = ()
    ) -> None:
        """The run ends, having built `built`, and the blocking tests `failed_tests` (each
        `model:test`, the model built in the run, or a test on more than one model that ran in
        it) failed; the other tests on more than one model that could run passed. It succeeded
        if it built all its targets and no test failed."""
        failed_tests = set(failed_tests)
        ran = self.tests_that_run(run_id, built) | failed_tests
        targets = self.running.pop(run_id)
        for name in built:
            self.events += 1
            self.built.add(name)
            self.last_built[name] = (self.events, targets)
            self.last_run_of_build[name] = run_id
            self.built_code[name] = self.run_code[run_id][name]
            self.built_at[name] = self.clock
        for test in ran:
            self.events += 1
            model = checked_model(test)
            target = self.last_built[model][0] if model in self.last_built else None
            # The result fills in the record its run planned, where it was (a record planned
            # later stays the latest), or is a new record.
            self.test_records.setdefault(test, {})[run_id] = _TestRecord(
                run_id, test not in failed_tests, target
            )
        self.events += 1
        not_built = targets - set(built)
        if not_built or failed_tests:
            self.failed_runs[run_id] = frozenset(built)
            failed_upstream = not_built | {checked_model(test) for test in failed_tests}
            skipped = {name for name in not_built if self.assets[name].parents & failed_upstream}
            self.skipped_by_run_ending.append((self.events, frozenset(skipped)))

    def tick(self, now: datetime) -> set[str]:
        requested: set[str] = set()
        self.held_back = set()
        for name in self.in_dependency_order():
            if self._wants(name, now, requested) and self._safe(name, requested):
                if self._reused(name, now, requested):
                    self.held_back.add(name)
                else:
                    requested.add(name)
        self.tests_requested = {
            test.name for test in self.tests.values() if self._test_wanted(test, requested)
        }
        for name in self.assets:
            self.evaluated[name] = _Evaluated(now, self.events)
        self.missing_last_tick = set(self.assets) - self.built
        self.requested_last_tick = requested
        self.clock = now
        self.edited.clear()
        return requested

    def _test_wanted(self, test: ModelTest, requested: set[str]) -> bool:
        with_a_model = any(name in requested for name in test.reads)
        every_model_exists = all(name in self.built or name in requested for name in test.reads)
        running = self._test_in_progress(test.name) or any(
            self._in_progress(name) for name in test.reads
        )
        no_result = self._test_result_on_latest_build(test.name) is None
        return (with_a_model or no_result) and every_model_exists and not running

    def _wants(self, name: str, now: datetime, requested: set[str]) -> bool:
        asset, before = self.assets[name], self.evaluated.get(name)
        was_requested = name in self.requested_last_tick
        skipped = before is not None and any(
            ended > before.event and name in names for ended, names in self.skipped_by_run_ending
        )
        if asset.is_view:
            fresh = any(p in requested for p in asset.parents) or (
                before is not None
                and (
                    name in self.edited
                    or skipped
                    or any(self._updated_apart(p, name, before) for p in asset.parents)
                )
            )
            _since(self.waiting_change, name, trigger=fresh, reset=was_requested and not fresh)
            newly_missing = name not in self.built and name not in self.missing_last_tick
            built_since = before is not None and self._built_since(name, before)
            _since(
                self.waiting_new, name, trigger=newly_missing, reset=was_requested or built_since
            )
            return name in self.waiting_change or name in self.waiting_new
        tick = before is not None and latest_cron_tick(asset.cron, now) > before.at
        reset = (was_requested and not tick) or (tick and self._in_progress(name))
        _since(self.waiting_cron, name, trigger=tick, reset=reset)
        _since(self.waiting_skipped, name, trigger=skipped, reset=was_requested and not skipped)
        return name in self.waiting_cron or name in self.waiting_skipped

    def _safe(self, name: str, requested: set[str]) -> bool:
        parents = self.assets[name].parents
        return not (
            self._in_progress(name)
            or any(self._in_progress(p) for p in parents)
            or any(p not in self.built and p not in requested for p in parents)
            or any(self._failed(p) and p not in requested for p in parents)
        )

    def _reused(self, name: str, now: datetime, requested: set[str]) -> bool:
        """The node keeps its last build: nothing changed, or not long enough ago."""
        reuse, run = self.assets[name].reuse, self.last_run_of_build.get(name)
        if reuse is None or run is None or self.built_code[name] != self.code_edits.get(name, 0):
            return False
        parents = self.assets[name].parents
        fresh = {p for p in parents if self._new_data(p, run, requested, seen=set())}
        if not fresh or (reuse.require_all and fresh != parents):
            return True
        # A build happens just after the clock's time: one exactly its tolerance before the
        # tick is not quite that old.
        return now - self.built_at[name] <= reuse.lag_tolerance

    def _new_data(self, parent: str, build_run: str, requested: set[str], seen: set[str]) -> bool:
        """New data in `parent` since the run `build_run` started, for a node it built."""
        if parent in seen:
            return False
        seen.add(parent)
        built_after = parent in self.last_built and (
            self.last_built[parent][0] > self.run_started_at[build_run]
            and self.last_run_of_build.get(parent) != build_run
        )
        if parent in requested or built_after:
            return True
        asset = self.assets.get(parent)  # None: a dbt source
        return (
            asset is not None
            and asset.is_view
            and any(self._new_data(p, build_run, requested, seen) for p in sorted(asset.parents))
        )

    def _failed(self, name: str) -> bool:
        """The latest result of one of its blocking tests failed on its latest build, or its
        latest run failed without building it."""
        test_failed = any(
            self._test_result_on_latest_build(test) == "failed"
            for test in self.test_records
            if checked_model(test) == name
        )
        run = self.last_planned_by.get(name)
        run_failed = run in self.failed_runs and name not in self.failed_runs[run]
        return test_failed or run_failed

    def _in_progress(self, name: str) -> bool:
        return self.last_planned_by.get(name) in self.running

    def _latest_test_record(self, test: str) -> _TestRecord | None:
        records = self.test_records.get(test, {})
        return next(reversed(records.values())) if records else None

    def _test_in_progress(self, test: str) -> bool:
        record = self._latest_test_record(test)
        return record is not None and record.passed is None and record.run_id in self.running

    def _test_result_on_latest_build(self, test: str) -> str | None:
        """The test's latest result if it is on its model's latest build: "passed", "failed"
        or "not run" (its run ended without running it); None if there is none, or it runs."""
        record = self._latest_test_record(test)
        if record is None or self._test_in_progress(test):
            return None
        model = checked_model(test)
        latest = self.last_built.get(model)
        if latest is None or self.last_run_of_build.get(model) == record.run_id:
            on_latest = True
        elif record.passed is None:
            build_run = self.last_run_of_build.get(model)
            on_latest = self.run_started_at[record.run_id] > self.run_started_at.get(build_run, 0)
        else:
            on_latest = record.target == latest[0]
        if not on_latest:
            return None
        return "not run" if record.passed is None else "passed" if record.passed else "failed"

    def _built_since(self, name: str, before: _Evaluated) -> bool:
        return name in self.last_built and self.last_built[name][0] > before.event

    def _updated_apart(self, parent: str, child: str, before: _Evaluated) -> bool:
        """The parent was built since the child's last evaluation, by a run not targeting it."""
        return self._built_since(parent, before) and child not in self.last_built[parent][1]

    def in_dependency_order(self) -> list[str]:
        ordered: list[str] = []

        def visit(name: str) -> None:
            if name not in ordered and name in self.assets:  # a dbt source is not evaluated
                for parent in sorted(self.assets[name].parents):
                    visit(parent)
                ordered.append(name)

        for name in sorted(self.assets):
            visit(name)
        return ordered


def checked_model(test: str) -> str:
    """The model a test (`model:test`) is a check on."""
    return test.partition(":")[0]


def _since(waiting: set[str], name: str, trigger: bool, reset: bool) -> None:
    """Dagster's `trigger.since(reset)`: set by the trigger, cleared by the reset; the reset
    wins when both are true (the policies make sure they are not, where it matters)."""
    if trigger:
        waiting.add(name)
    if reset:
        waiting.discard(name)
