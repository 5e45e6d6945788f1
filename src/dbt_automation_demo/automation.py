"""What refreshes each dbt asset, and why: the automation policies of this project.

Every policy is a named, labelled ``AutomationCondition``; the labels are what the Dagster UI's
automation tab shows. ``CustomDbtComponent`` only maps a dbt node to one of these.

Two sketches that look right and are not (kept for comparison; the tests show how they fail):
``sketch_view_policy`` and ``sketch_table_policy``.
"""

from __future__ import annotations

import functools
import itertools
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg

from dbt_automation_demo.conditions import SinceLastRequested
from dbt_automation_demo.internals.conditions import (
    AnyParentUpdated,
    ParentFailed,
    RunningAtLastTick,
    SafeToRun,
    SkippedAfterUpstreamFailed,
    SkippedSinceLastRequested,
)
from dbt_automation_demo.internals.dagster_names import (
    cron_string_iterator,
    get_smallest_cron_interval,
    is_valid_cron_schedule,
)
from dbt_automation_demo.internals.what_changed import EvaluatedOnChange, only_known_nodes
from dbt_automation_demo.reuse import NothingNewSinceLastBuild, ReuseSettings

AC = dg.AutomationCondition

# The tag of every dbt source the component observes (components/source_observations.py).
OBSERVED_SOURCE_TAG = "dbt_automation_demo/source"
OBSERVED = "observed"
DEFAULT_DAILY_CRON = "0 6 * * *"
DEFAULT_TIMEZONE = "UTC"
# How long after its cron tick an asset may take before Dagster shows it as overdue.
FRESHNESS_GRACE = timedelta(minutes=30)
# Ticks compared when checking that a shifted cron is the same schedule, later.
_TICKS_COMPARED = 200


# Each single-node condition (dbt_automation_demo.internals.conditions), or, with the
# component's `speedups: false`, the composition of Dagster's built-ins it computes exactly
# (tests/test_differential.py evaluates both on the same random instance states).


def any_parent_updated(speedups: bool = True) -> dg.AutomationCondition:
    """A parent materialized since the previous evaluation by a run that did not also build
    this asset, or requested on this tick."""
    return AnyParentUpdated() if speedups else AC.any_deps_updated()


def safe_to_run(speedups: bool = True) -> dg.AutomationCondition:
    """Not running, no parent running, and no parent Dagster can build or observe missing
    (unless it is requested on this tick): an observed dbt source is missing until an
    observation found data in it; an unobserved external asset never counts."""
    if speedups:
        return SafeToRun()
    return ~AC.in_progress() & ~AC.any_deps_in_progress() & ~_any_dep_missing()


def _any_dep_missing() -> dg.AutomationCondition:
    """A parent Dagster builds or observes is missing and not requested on this tick."""
    # The component tags every source it makes observable, and only those.
    built_or_observed = dg.AssetSelection.all() | dg.AssetSelection.tag(
        OBSERVED_SOURCE_TAG, OBSERVED, include_sources=True
    )
    return AC.any_deps_missing().allow(built_or_observed)


def running_at_last_tick(cron: str, timezone: str, speedups: bool = True) -> dg.AutomationCondition:
    """From an evaluation on which a tick passed while the asset was running, until one on
    which a tick passed while it was not."""
    if speedups:
        return RunningAtLastTick(cron_schedule=cron, cron_timezone=timezone)
    tick = AC.cron_tick_passed(cron, timezone)
    return (tick & AC.in_progress()).since(tick & ~AC.in_progress())


def skipped_since_last_requested(speedups: bool = True) -> dg.AutomationCondition:
    """From the evaluation after dbt skipped the asset after an upstream failure in its run,
    until the evaluation after a request on which it was not skipped again."""
    if speedups:
        return SkippedSinceLastRequested()
    return SinceLastRequested(trigger=SkippedAfterUpstreamFailed())


def _changed(speedups: bool) -> dg.AutomationCondition:
    # A parent's update, not the view's own (newly_updated() would be about the view itself);
    # a parent update made by a run that also built this view is ignored.
    parent_updated = any_parent_updated(speedups)
    return (AC.code_version_changed() | parent_updated | _skipped()).with_label(
        "SQL changed, a parent updated, or skipped after an upstream failure"
    )


def _skipped() -> dg.AutomationCondition:
    return SkippedAfterUpstreamFailed().with_label("skipped by dbt after an upstream failure")


def _safe_to_run(speedups: bool) -> dg.AutomationCondition:
    # Each node names the parent that holds the asset back, and why, so the UI shows it.
    parent_failed = ParentFailed().with_label("parent's blocking check failed, or its last run")
    return safe_to_run(speedups).with_label("not running, no parent running or missing") & (
        ~parent_failed
    ).with_label("no parent's blocking check failed")


def _policy(
    condition: dg.AutomationCondition, reuse: ReuseSettings | None, label: str, speedups: bool
) -> dg.AutomationCondition:
    """The policy, labelled; with reuse (dbt State's `state` config, `reuse.py`), requested
    only where the asset does not keep its last build."""
    if reuse is None:
        return _root(condition, label, speedups)
    reused = NothingNewSinceLastBuild(
        lag_tolerance_minutes=int(reuse.lag_tolerance.total_seconds() // 60),
        require_fresh_data_from=reuse.require_fresh_data_from,
    ).with_label(f"reused ({reuse.label})")
    built_only_if_changed = (~reused).with_label("SQL changed, or new data since its last build")
    return _root(condition & built_only_if_changed, f"{label}, reusing unchanged builds", speedups)


def _root(condition: dg.AutomationCondition, label: str, speedups: bool) -> dg.AutomationCondition:
    """The labelled policy; with the speedups, evaluated only on a tick when something it reads
    may have changed, its last evaluation standing otherwise (`internals/what_changed.py`). A
    policy whose result can change with time alone (reuse's lag tolerance) is evaluated on
    every tick."""
    if speedups and only_known_nodes(condition):
        return EvaluatedOnChange(condition=condition).with_label(label)
    return condition.with_label(label)


@functools.cache
def refresh_on_change(
    speedups: bool = True, reuse: ReuseSettings | None = None
) -> dg.AutomationCondition:
    """Views: refresh when their SQL changes, a parent updates, or they are new and missing.

    Guarantees:
    - a parent's materialization requests the view once on the next tick (unless that same
      run built the view too); the view's own materialization never requests it again;
    - an edited SQL file (new code version) requests that view once;
    - a view added to the project while its parents exist is requested once, even when the
      sensor has evaluated before (Dagster's ``eager()``/``on_missing()`` treat a new asset's
      first evaluation as already handled and skip it);
    - never while the view or one of its parents is running or missing; a trigger that arrives
      meanwhile waits and is requested once they finish, so nothing is lost;
    - only a request spends a parent update or an SQL edit: a run started by hand may have read
      the parent before it updated, so a view built by hand while such a trigger waits is
      still requested once (a view built by hand is no longer new, though);
    - a request spends only the triggers that came before it: one that arrives between the
      request and the next tick (the view's run has started, or is already done) requests the
      view again;
    - a failed run is not retried: only a new trigger requests the view again;
    - never while a parent's latest error-severity dbt test (a blocking asset check) failed, or
      a parent's latest run failed before materializing it, unless that parent is requested
      on the same tick (it is tested again in the same run, and `dbt build` skips the view if
      the test fails again); the trigger waits and is not lost; warn-severity tests never
      hold anything back;
    - a view that dbt skipped because something upstream failed in its run (a test, a model)
      stays due, and is requested once the parent passes again.

    With `reuse` (a dbt `state` config, or the component's `reuse: true`), a trigger also
    waits until the view's SQL changed or it has new data since its last build, and that build
    is `lag_tolerance` old (`reuse.py` lists the guarantees); it is not lost meanwhile.
    """
    # A parent update or an edit is spent only by a request, and only by one made before it:
    # spending it on the view's own update too (as eager() does) would lose one that arrived
    # while the view's run was past reading its parent. Dagster's since() lets the reset win a
    # tie (dagster-io/dagster#33587): SinceLastRequested does not.
    changed = SinceLastRequested(trigger=_changed(speedups)).with_label(
        "SQL changed or a parent updated since last requested"
    )
    # Being new is spent by any build, or building everything by hand would leave every view
    # requested once more.
    new = (
        AC.newly_missing()
        .since(AC.newly_requested() | AC.newly_updated())
        .with_label("newly missing since last requested or built")
    )
    return _policy(
        (changed | new) & _safe_to_run(speedups),
        reuse,
        "refresh on SQL change or parent update",
        speedups,
    )


@functools.cache
def refresh_daily(
    cron: str = DEFAULT_DAILY_CRON,
    timezone: str = DEFAULT_TIMEZONE,
    speedups: bool = True,
    reuse: ReuseSettings | None = None,
) -> dg.AutomationCondition:
    """Tables, seeds, snapshots, incrementals: refresh once per cron tick, never while running.

    Guarantees:
    - nothing before the tick; on the first evaluation at or after it the asset is requested
      once, and not again until the next tick, whatever updates upstream in between;
    - it does not wait for parents to update since the tick (Dagster's ``on_cron()`` does, and
      so never fires below a view that rarely changes or a dbt source Dagster never updates);
    - a run of the asset already in progress at the tick counts as that tick's refresh;
    - a request spends only the ticks before it: a tick that passes between the request and the
      next evaluation (a table that waited for a running parent, requested just before the next
      tick of a frequent cron) requests it again;
    - while a parent is running the request waits, so a table is built after the parent it
      reads; parents due on the same tick are requested with it, in one run, in dbt's order;
    - a failed run is not retried before the next tick;
    - never while a parent's blocking check or latest run failed (as views); a tick that
      passes meanwhile waits, and a table that dbt skipped after an upstream failure in its
      run stays due and is requested once, as soon as the parent passes again.

    With `reuse`, a tick only makes the asset eligible: it is requested once its code changed
    or it has new data since its last build (from any parent, or all) and that build is
    `lag_tolerance` old, and not before; it stays eligible until then (`reuse.py`).
    """
    tick = AC.cron_tick_passed(cron, timezone)
    # A request spends the ticks before it. A tick that passes between a request and the next
    # evaluation makes both sides true; since() then compares their timestamps (the tick's
    # time, the request's evaluation time) and the later one wins. The same comparison keeps a
    # tick that fell exactly on the evaluation that requested it from counting again on the
    # next one (cron_tick_passed() is true for a tick at the previous evaluation's very time).
    due = tick.since(AC.newly_requested()).with_label(
        f"'{cron}' ({timezone}) tick passed since last requested"
    )
    # A run in progress at the tick is that tick's refresh: the tick waits for the next one
    # that passes while the asset is not running. The run storage is asked whether the asset
    # is in progress only on a tick, which keeps a steady-state tick cheap.
    refreshed_by_a_running_run = running_at_last_tick(cron, timezone, speedups).with_label(
        "the last tick passed while it was running"
    )
    skipped = skipped_since_last_requested(speedups).with_label(
        "skipped by dbt after an upstream failure, since last requested"
    )
    return _policy(
        ((due & ~refreshed_by_a_running_run) | skipped) & _safe_to_run(speedups),
        reuse,
        f"refresh on cron '{cron}' ({timezone})",
        speedups,
    )


@functools.cache
def run_as_soon_as_every_model_exists(speedups: bool = True) -> dg.AutomationCondition:
    """A dbt test that reads more than one model (`relationships`, a singular or package test
    over several models), which is a check on the model it tests (dagster-io/dagster#17628).

    Guarantees:
    - it runs in every run of the model it tests, and of any other model it reads, once every
      model it reads exists (built before, or requested on the same tick): dbt's own
      `--indirect-selection buildable` leaves it out of a run that does not build them all;
    - while a model it reads has never been built, it is deferred, not failed: not requested
      with its model (its evaluation names the missing model), and requested once that model
      exists, alone if that model was built by hand;
    - never while it runs or a model it reads runs; a run that failed is not retried, and one
      that passed is not repeated until a model it reads is requested again.

    In the run, `dbt build` runs it before anything below the model it tests, and skips all of
    that when it fails (`internals/blocking_tests.py`); across runs, the gate holds the
    model's children back while it is the model's latest failed blocking check.
    """
    with_a_model = AC.any_deps_match(AC.will_be_requested()).with_label(
        "a model it reads is requested"
    )
    not_run_since = AC.missing().with_label("not run since its model's latest build")
    every_model_exists = (~_any_dep_missing()).with_label("every model it reads exists")
    nothing_running = (~AC.in_progress() & ~AC.any_deps_in_progress()).with_label(
        "neither it nor a model it reads is running"
    )
    return _root(
        (with_a_model | not_run_since) & every_model_exists & nothing_running,
        "run as soon as every model it reads exists",
        speedups,
    )


@functools.cache
def overdue_after_grace(cron: str, timezone: str = DEFAULT_TIMEZONE) -> dg.FreshnessPolicy:
    """Dagster's freshness policy for an asset refreshed on `cron`: it fails (overdue) when the
    asset has not been materialized since a tick once `FRESHNESS_GRACE` (30 minutes, or the
    cron's shortest interval if less) has passed since that tick.

    A table held back by a failed test, a failed run or a stopped sensor then turns overdue
    when Dagster's freshness daemon evaluates it, which gives people something to alert on.
    Where the tick plus the grace is itself a cron (a shifted minute field), the policy is
    Dagster's cron policy; otherwise a time window of the cron's longest interval plus the
    grace.
    """
    grace = min(FRESHNESS_GRACE, get_smallest_cron_interval(cron, timezone))
    deadline = _minutes_shifted(cron, grace)
    if deadline is not None and _same_ticks_later(cron, deadline, grace, timezone):
        return dg.FreshnessPolicy.cron(
            deadline_cron=deadline, lower_bound_delta=grace, timezone=timezone
        )
    return dg.FreshnessPolicy.time_window(fail_window=_longest_interval(cron, timezone) + grace)


def _minutes_shifted(cron: str, by: timedelta) -> str | None:
    """The cron with its minute field moved `by` later (a number, a list or `*/n`), or None."""
    minute, *rest = cron.split()
    if minute.startswith("*/") and minute[2:].isdigit():
        minutes = list(range(0, 60, int(minute[2:])))
    elif all(part.isdigit() for part in minute.split(",")):
        minutes = [int(part) for part in minute.split(",")]
    else:
        return None
    shift = int(by.total_seconds() // 60)
    shifted = sorted({(value + shift) % 60 for value in minutes})
    return " ".join([",".join(map(str, shifted)), *rest])


def _same_ticks_later(cron: str, deadline: str, by: timedelta, timezone: str) -> bool:
    ticks, deadlines = _first_ticks(cron, timezone), _first_ticks(deadline, timezone, after=by)
    return all(tick + by == late for tick, late in zip(ticks, deadlines, strict=True))


def _longest_interval(cron: str, timezone: str) -> timedelta:
    ticks = _first_ticks(cron, timezone)
    return max(later - earlier for earlier, later in itertools.pairwise(ticks))


def _first_ticks(cron: str, timezone: str, after: timedelta = timedelta(0)) -> list[datetime]:
    """The cron's first `_TICKS_COMPARED` ticks from a fixed date (plus `after`)."""
    start = datetime(2031, 1, 1, tzinfo=ZoneInfo(timezone)) + after
    ticks = cron_string_iterator(start.timestamp(), cron, timezone)
    return list(itertools.islice(ticks, _TICKS_COMPARED))


def sketch_view_policy() -> dg.AutomationCondition:
    """The design's view condition. Wrong: ignores parent updates, re-requests after its own run."""
    return (AC.code_version_changed() | AC.newly_updated()).with_label("sketch: view")


def sketch_table_policy(cron: str = DEFAULT_DAILY_CRON) -> dg.AutomationCondition:
    """The design's table condition. Wrong: waits for every parent to update after the tick."""
    return (AC.on_cron(cron) & ~AC.in_progress()).with_label("sketch: table")


def invalid_cron_reason(cron: str) -> str | None:
    """None for a cron string Dagster accepts, otherwise why it does not."""
    return None if is_valid_cron_schedule(cron) else f"'{cron}' is not a valid cron string"


def invalid_timezone_reason(timezone: str) -> str | None:
    """None for an IANA time zone name, otherwise why it is not one."""
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return f"'{timezone}' is not a known IANA time zone"
    return None
