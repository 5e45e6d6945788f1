"""Reuse under random sequences: an unchanged node is never rebuilt, and a node whose inputs
changed is rebuilt on the first tick once its tolerance has passed (docs/reuse.md).

The real policies (`refresh_on_change`, `refresh_daily`) with drawn reuse settings, on a small
graph of the demo's shape, over a real (scratch) SQLite instance:

    seed ──> view (reuse, drawn tolerance) ──> table (*/15, reuse, drawn tolerance, any|all)
    other_seed ──────────────────────────────┘
    other_seed ──> plain_view (no reuse)

Data lands in the seeds (runs by hand), code is edited (new code versions), the clock moves,
and the sensor ticks; what a tick requests is built at once, in one run (during which data may
land in the seed, after the run planned its builds). After every tick the
requested set must equal the rule's, computed here from the history alone: a node is requested
when its policy is due (a view: a parent updated or its code changed since its last request; the
table: a cron tick passed since) and its code changed since its last build, or a parent (any, or
all) has new data since then and that build is at least its tolerance old. A failure prints the
sequence as a timeline.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.events import DagsterEventType, StepMaterializationData
from dagster._core.test_utils import freeze_time
from hypothesis import given, settings
from hypothesis import strategies as st

from dbt_automation_demo.automation import refresh_daily, refresh_on_change
from dbt_automation_demo.components.custom_dbt_component import speedups_in_environment
from dbt_automation_demo.internals.dagster_names import CODE_VERSION_TAG
from dbt_automation_demo.reuse import MATERIALIZATION_TAG, ReuseSettings
from harness import report_event, scratch_instance, start_recorded_run

# `nox -s tests`: 25 fixed sequences; `nox -s fuzz` sets how many, and the seed.
EXAMPLES = int(os.environ.get("REUSE_PROPERTY_EXAMPLES", "25"))
RANDOM_SEED = "REUSE_PROPERTY_EXAMPLES" in os.environ
START = datetime(2031, 3, 4, 9, 3, 7, tzinfo=UTC)  # never on a minute: ticks are on minutes
CRON = "*/15 * * * *"
SEED, OTHER_SEED, VIEW, TABLE, PLAIN_VIEW = "seed", "other_seed", "view", "table", "plain_view"
PARENTS = {VIEW: [SEED], TABLE: [VIEW, OTHER_SEED], PLAIN_VIEW: [OTHER_SEED]}
AUTOMATED = (VIEW, TABLE, PLAIN_VIEW)  # in dependency order
STEPS = st.one_of(
    st.tuples(st.just("lands"), st.sampled_from([SEED, OTHER_SEED])),
    st.tuples(st.just("edit"), st.sampled_from([VIEW, TABLE])),
    st.tuples(
        st.just("tick after"),
        st.sampled_from([timedelta(minutes=1), timedelta(minutes=7), timedelta(minutes=16)]),
    ),
    # A tick whose run reads the seed after new data landed in it: planned before, built after.
    st.tuples(st.just("tick, data lands during its run, after"), st.just(timedelta(minutes=11))),
)


@dataclass
class Settings:
    view_tolerance: timedelta
    table_tolerance: timedelta
    table_requires: str  # "any" or "all"

    def reuse(self, name: str) -> ReuseSettings | None:
        if name == VIEW:
            return ReuseSettings(lag_tolerance=self.view_tolerance)
        if name == TABLE:
            return ReuseSettings(self.table_tolerance, self.table_requires)  # type: ignore[arg-type]
        return None


SETTINGS = st.builds(
    Settings,
    view_tolerance=st.sampled_from([timedelta(0), timedelta(minutes=10), timedelta(minutes=45)]),
    table_tolerance=st.sampled_from([timedelta(0), timedelta(minutes=30)]),
    table_requires=st.sampled_from(["any", "all"]),
)


def definitions(settings: Settings, versions: dict[str, str]) -> dg.Definitions:
    def spec(name: str) -> dg.AssetSpec:
        reuse = settings.reuse(name)
        speedups = speedups_in_environment()  # `nox -s stock`: Dagster's built-in conditions
        if name in (VIEW, PLAIN_VIEW):
            condition, kind = refresh_on_change(speedups, reuse), "view"
        elif name == TABLE:
            condition, kind = refresh_daily(CRON, speedups=speedups, reuse=reuse), "table"
        else:
            condition, kind = None, "seed"  # data lands in it by hand
        return dg.AssetSpec(
            name,
            deps=PARENTS.get(name, []),
            automation_condition=condition,
            code_version=versions[name],
            tags={MATERIALIZATION_TAG: kind},
        )

    @dg.multi_asset(specs=[spec(name) for name in versions], can_subset=True)
    def graph():  # never executed: runs are recorded, as in the interleavings
        raise NotImplementedError

    return dg.Definitions(assets=[graph])


@dataclass
class History:
    """What happened, in order, from which the rule's answer is computed."""

    now: datetime
    versions: dict[str, str] = field(default_factory=dict)
    order: int = 0  # a counter in event order, as the event log's storage ids
    built_at: dict[str, tuple[int, datetime, str, int]] = field(default_factory=dict)
    # name -> (event order of its latest update, run number)
    updated: dict[str, tuple[int, int]] = field(default_factory=dict)
    requested_at: dict[str, int] = field(default_factory=dict)
    edited_at: dict[str, int] = field(default_factory=dict)
    # The table is due from a cron tick after this time (its last request's tick, or the
    # first evaluation's: a first evaluation sees no tick) until it is requested.
    table_due_after: datetime | None = None
    runs: int = 0

    def next(self) -> int:
        self.order += 1
        return self.order

    def built(self, names: list[str], during: str | None = None) -> None:
        """One run built `names`, in order: planned first, then each built; data landed in
        `during` (another run) in between."""
        self.runs += 1
        run = self.runs
        planned = {name: self.next() for name in names}
        if during is not None:
            self.built([during])
        for name in names:
            at = self.next()
            self.built_at[name] = (planned[name], self.now, self.versions[name], run)
            self.updated[name] = (at, run)

    def expected(self, settings: Settings, tick: datetime) -> set[str]:
        requested: set[str] = set()
        for name in AUTOMATED:
            if self._due(name, tick, requested) and self._builds(name, settings, requested):
                requested.add(name)
        return requested

    def _due(self, name: str, tick: datetime, requested: set[str]) -> bool:
        since = self.requested_at.get(name, 0)
        if name == TABLE:
            return self.table_due_after is not None and _cron_tick_between(
                self.table_due_after, tick
            )
        parent_updated = any(
            self.updated.get(parent, (0, 0))[0] > since or parent in requested
            for parent in PARENTS[name]
        )
        return parent_updated or self.edited_at.get(name, 0) > since

    def _builds(self, name: str, settings: Settings, requested: set[str]) -> bool:
        reuse = settings.reuse(name)
        if reuse is None:
            return True
        planned, built_at, version, run = self.built_at[name]
        if version != self.versions[name]:
            return True
        fresh = [self._new_data(p, planned, run, requested) for p in PARENTS[name]]
        enough = all(fresh) if reuse.require_fresh_data_from == "all" else any(fresh)
        return enough and self.now - built_at >= reuse.lag_tolerance

    def _new_data(self, parent: str, planned: int, run: int, requested: set[str]) -> bool:
        at, by = self.updated.get(parent, (0, 0))
        if parent in requested or (at > planned and by != run):
            return True
        return parent in (VIEW, PLAIN_VIEW) and any(
            self._new_data(grandparent, planned, run, requested) for grandparent in PARENTS[parent]
        )


def _cron_tick_between(previous: datetime, now: datetime) -> bool:
    """A `*/15` tick in (previous, now]: the evaluations are never on a minute."""
    return now.replace(minute=now.minute // 15 * 15, second=0) > previous


class Replay:
    """The sequence on a real instance, and its timeline."""

    def __init__(self, instance: dg.DagsterInstance, settings: Settings):
        self.instance, self.settings = instance, settings
        names = [SEED, OTHER_SEED, *AUTOMATED]
        self.history = History(now=START, versions={name: "v1" for name in names})
        self.cursor = None
        self.timeline = [f"settings: {settings}"]

    def run(self, names: list[str], label: str, during: str | None = None) -> None:
        """A run that builds `names` in order and succeeds, at the current time; with
        `during`, data lands in that seed after the run planned its builds."""
        with freeze_time(self.history.now):
            self._record(names, during)
        self.history.built(names, during)
        landed = f" (data landed in {during} during it)" if during else ""
        self.timeline.append(
            f"{self.history.now:%H:%M:%S} {label}: built {', '.join(names)}{landed}"
        )

    def _record(self, names: list[str], during: str | None) -> None:
        run = start_recorded_run(self.instance, names)
        if during is not None:
            self._record([during], None)
        for name in names:
            tags = {CODE_VERSION_TAG: self.history.versions[name]}
            data = StepMaterializationData(dg.AssetMaterialization(name, tags=tags))
            report_event(self.instance, run, DagsterEventType.ASSET_MATERIALIZATION, data)
        report_event(self.instance, run, DagsterEventType.RUN_SUCCESS)

    def tick(self, landing_during_run: str | None = None) -> tuple[set[str], set[str]]:
        defs = definitions(self.settings, self.history.versions)
        expected = self.history.expected(self.settings, self.history.now)
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=self.instance, evaluation_time=self.history.now, cursor=self.cursor
        )
        self.cursor = result.cursor
        requested = {name for name in AUTOMATED if result.get_num_requested(dg.AssetKey(name))}
        self.timeline.append(f"{self.history.now:%H:%M:%S} tick: requested {sorted(requested)}")
        for name in requested:
            self.history.requested_at[name] = self.history.next()
        if TABLE in requested or self.history.table_due_after is None:
            self.history.table_due_after = self.history.now
        if requested:
            names = [name for name in AUTOMATED if name in requested]
            self.run(names, "the sensor's run", during=landing_during_run)
        return requested, expected

    def step(self, kind: str, what) -> None:
        if kind == "lands":
            self.run([what], "data lands")
        elif kind == "edit":
            self.history.versions[what] = f"v{self.history.next()}"
            self.history.edited_at[what] = self.history.order
            self.timeline.append(f"{self.history.now:%H:%M:%S} {what}'s code edited")
        else:
            self.history.now += what
            during = SEED if kind.startswith("tick, data lands") else None
            requested, expected = self.tick(landing_during_run=during)
            assert requested == expected, self.failure(expected)

    def failure(self, expected: set[str]) -> str:
        timeline = "\n".join(self.timeline)
        return f"expected {sorted(expected)} on the last tick\n{timeline}"


@contextmanager
def replayed(drawn: Settings) -> Iterator[Replay]:
    """Everything built once, then a first evaluation (which requests nothing)."""
    with scratch_instance() as instance:
        replay = Replay(instance, drawn)
        replay.run([SEED, OTHER_SEED, *AUTOMATED], "by hand")
        for name in AUTOMATED:
            replay.history.requested_at[name] = replay.history.order
        replay.history.now += timedelta(minutes=1)
        requested, _ = replay.tick()
        assert requested == set(), replay.failure(set())
        yield replay


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM_SEED)
@given(drawn=SETTINGS, steps=st.lists(STEPS, min_size=1, max_size=30))
def test_an_unchanged_node_is_never_rebuilt_and_a_changed_one_is_rebuilt_once_its_tolerance_passed(
    drawn: Settings, steps: list[tuple[str, object]]
) -> None:
    with replayed(drawn) as replay:
        for kind, what in steps:
            replay.step(kind, what)
