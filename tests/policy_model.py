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

Both, dbt's tests: never while a parent (not requested on the same tick) failed: its latest
blocking test failed on its latest build, or its latest run failed without building it. A run
that fails skips what is downstream of a failure in it (a failed test, or a target it did not
build); each asset it skipped so is due again (a trigger, as above) from the next tick on.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

DAILY = "0 6 * * *"
EVERY_15_MINUTES = "*/15 * * * *"


@dataclass(frozen=True)
class ModelAsset:
    name: str
    parents: frozenset[str]
    is_view: bool
    cron: str | None = None  # for everything but views


def latest_cron_tick(cron: str, at: datetime) -> datetime:
    """The last tick of `cron` at or before `at` (UTC), for the two crons the fuzz test uses."""
    at = at.replace(second=0, microsecond=0)
    if cron == EVERY_15_MINUTES:
        return at.replace(minute=at.minute - at.minute % 15)
    if cron == DAILY:
        today = at.replace(hour=6, minute=0)
        return today if today <= at else today - timedelta(days=1)
    raise ValueError(f"the model knows no cron {cron!r}")


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
    check_failed_on: dict[str, int] = field(default_factory=dict)  # asset -> its build's event
    skipped_by_run_ending: list[tuple[int, frozenset[str]]] = field(default_factory=list)

    def define(self, assets: Iterable[ModelAsset]) -> None:
        """The project now holds these assets (new ones have never been evaluated)."""
        self.assets = {asset.name: asset for asset in assets}

    def edit(self, name: str) -> None:
        self.edited.add(name)

    def observed(self, source: str, new_data: bool) -> None:
        """An observation of a dbt source: with new data (or its first data), or the same."""
        self.events += 1
        if new_data or source not in self.built:
            self.built.add(source)
            self.last_built[source] = (self.events, frozenset())

    def run_started(self, run_id: str, targets: Iterable[str]) -> None:
        self.running[run_id] = frozenset(targets)
        for name in targets:
            self.last_planned_by[name] = run_id
        self.events += 1

    def run_ended(
        self, run_id: str, built: Sequence[str], failed_tests: Iterable[str] = ()
    ) -> None:
        """The run ends, having built `built`, and the blocking tests of `failed_tests` (built
        in it) failed; it succeeded if it built all its targets and no test failed."""
        targets = self.running.pop(run_id)
        for name in built:
            self.events += 1
            self.built.add(name)
            self.last_built[name] = (self.events, targets)
        for name in failed_tests:
            self.check_failed_on[name] = self.last_built[name][0]
        self.events += 1
        not_built = targets - set(built)
        if not_built or failed_tests:
            self.failed_runs[run_id] = frozenset(built)
            failed_upstream = not_built | set(failed_tests)
            skipped = {name for name in not_built if self.assets[name].parents & failed_upstream}
            self.skipped_by_run_ending.append((self.events, frozenset(skipped)))

    def tick(self, now: datetime) -> set[str]:
        requested: set[str] = set()
        for name in self.in_dependency_order():
            if self._wants(name, now, requested) and self._safe(name, requested):
                requested.add(name)
        for name in self.assets:
            self.evaluated[name] = _Evaluated(now, self.events)
        self.missing_last_tick = set(self.assets) - self.built
        self.requested_last_tick = requested
        self.edited.clear()
        return requested

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

    def _failed(self, name: str) -> bool:
        """Its latest blocking test failed on its latest build, or its latest run failed
        without building it."""
        test_failed = name in self.check_failed_on and (
            self.last_built[name][0] == self.check_failed_on[name]
        )
        run = self.last_planned_by.get(name)
        run_failed = run in self.failed_runs and name not in self.failed_runs[run]
        return test_failed or run_failed

    def _in_progress(self, name: str) -> bool:
        return self.last_planned_by.get(name) in self.running

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


def _since(waiting: set[str], name: str, trigger: bool, reset: bool) -> None:
    """Dagster's `trigger.since(reset)`: set by the trigger, cleared by the reset; the reset
    wins when both are true (the policies make sure they are not, where it matters)."""
    if trigger:
        waiting.add(name)
    if reset:
        waiting.discard(name)
