"""Each single-node condition computes exactly what the built-in composition it replaces does.

For every pair in `automation.py` (`any_parent_updated`, `safe_to_run`, `running_at_last_tick`,
`skipped_since_last_requested`: the single node with `speedups`, Dagster's built-ins without),
Hypothesis drives one real instance through a random sequence of runs that start, end, fail
part-way or fail a blocking check (dbt then skips what is below it), and of evaluations on a
clock that crosses cron ticks. Each evaluation evaluates both sides, each with its own cursor,
over the same instance, and their true subsets must be equal for every asset. A failure prints
the sequence as a timeline.

The graph: a source `src` nobody observes (external: it never gets an event) under `a`; an
observed dbt source `obs` (observable, tagged as the component tags it; observations bring new
data or the same) under `b`; `c` reads `a` and `b`; `d` reads `c`. `a` and `c` have blocking
checks, as dbt's error-severity tests are.
"""

import base64
import itertools
import os
import zlib
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.events import (
    DagsterEventType,
    StepMaterializationData,
)
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from dbt_automation_demo.automation import (
    OBSERVED,
    OBSERVED_SOURCE_TAG,
    any_parent_updated,
    refresh_daily,
    refresh_on_change,
    run_as_soon_as_every_model_exists,
    running_at_last_tick,
    safe_to_run,
    skipped_since_last_requested,
)
from dbt_automation_demo.internals.quiet_ticks import SkipsQuietTicks
from dbt_automation_demo.internals.what_changed import (
    CarriedForward,
    _packed,
    _unpacked,
    evaluated_every_tick,
)
from harness import report_event, scratch_instance, sensor_tick, start_recorded_run

CRON, TIMEZONE = "*/15 * * * *", "UTC"
PARENTS = {"a": ["src"], "b": ["obs"], "c": ["a", "b"], "d": ["c"]}
CHECKED = ("a", "c")
ORDER = list(PARENTS)
START = datetime(2031, 1, 6, 5, 50, tzinfo=UTC)
# Random sequences per pair: `nox -s tests` runs a few, `nox -s stock` more.
EXAMPLES = int(os.environ.get("DIFFERENTIAL_EXAMPLES", "25"))
# Each test's random sequences: the same ones on every run (`derandomize`).
SEQUENCES = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
# The true subsets both sides agreed on, and how often: a pair that agrees only on "nothing"
# (or only on "everything") proves nothing.
SEEN: Counter = Counter()
MATERIALIZED = DagsterEventType.ASSET_MATERIALIZATION

GATE = ~dg.AutomationCondition.in_progress() & ~dg.AutomationCondition.any_deps_in_progress()
PAIRS: dict[str, Callable[[bool], dg.AutomationCondition]] = {
    "AnyParentUpdated": any_parent_updated,
    "SafeToRun": safe_to_run,
    "RunningAtLastTick": lambda speedups: running_at_last_tick(CRON, TIMEZONE, speedups),
    "SkippedSinceLastRequested": skipped_since_last_requested,
}


def graph_with(condition: dg.AutomationCondition) -> dg.Definitions:
    """The small graph, every asset automated by `condition` while neither it nor a parent is
    running: so the condition is not always requested when true, and what it carries across
    evaluations (a latch, a `since`) shows. Labelled, so that `&` keeps it one node."""
    gated = condition.with_label("under test") & GATE
    assets = [
        dg.AssetSpec(
            name,
            deps=parents,
            automation_condition=gated,
            skippable=True,
        )
        for name, parents in PARENTS.items()
    ]
    checks = [dg.AssetCheckSpec("tested", asset=name, blocking=True) for name in CHECKED]
    return with_the_sources(assets, checks)


def with_the_sources(assets: list[dg.AssetSpec], checks: list[dg.AssetCheckSpec]) -> dg.Definitions:
    """The graph's assets and checks (recorded, never run), `obs` observed, `src` external."""

    @dg.multi_asset(specs=assets, check_specs=checks, can_subset=True)
    def graph():  # never executed: runs are recorded, not run
        raise NotImplementedError

    observed = dg.AssetSpec("obs", tags={OBSERVED_SOURCE_TAG: OBSERVED})

    @dg.multi_observable_source_asset(specs=[observed])
    def observe():  # never executed: observations are recorded
        raise NotImplementedError

    return dg.Definitions(assets=[graph, observe, dg.AssetSpec("src")])


TARGETS = st.sets(st.sampled_from(ORDER), min_size=1)
FAILS_AT = st.integers(0, 5)  # the target that fails on its own (none when past the last)
START_RUN = st.tuples(st.just("start"), TARGETS)
END_RUN = st.tuples(st.just("end"), st.integers(0, 5), FAILS_AT, st.booleans())
RUN_NOW = st.tuples(st.just("run_now"), TARGETS, FAILS_AT, st.booleans())
TICK = st.tuples(st.just("tick"), st.sampled_from([1, 2, 7, 15, 31]))
OBSERVE = st.tuples(st.just("observe"), st.booleans())
STEPS = st.lists(st.one_of(RUN_NOW, TICK, START_RUN, END_RUN, OBSERVE), min_size=4, max_size=20)


class Instance:
    """One instance, the runs recorded as a launched run records them, and both sides'
    evaluations with their own cursors."""

    def __init__(self, instance: dg.DagsterInstance, pair: str):
        self.instance, self.now = instance, START
        self.pair = pair
        self.defs = {speedups: self.defs_for(speedups) for speedups in (True, False)}
        self.cursors: dict[bool, object] = {True: None, False: None}
        self.open_runs: list[tuple[dg.DagsterRun, list[str]]] = []
        self.numbers = itertools.count(1)
        self.data_versions = itertools.count(1)
        self.data_version: int | None = None
        self.timeline: list[str] = []

    def defs_for(self, speedups: bool) -> dg.Definitions:
        return graph_with(PAIRS[self.pair](speedups))

    def say(self, what: str) -> None:
        self.timeline.append(f"{self.now:%H:%M}  {what}")
        if currently_in_test_context():  # Hypothesis prints it with a failing sequence
            note(self.timeline[-1])

    def start(self, targets: set[str]) -> None:
        ordered = [name for name in ORDER if name in targets]
        run = start_recorded_run(self.instance, ordered, checks=self.checks_run_with(targets))
        self.open_runs.append((run, ordered))
        self.say(f"run {run.run_id[:4]} of {', '.join(ordered)} starts")

    def checks_run_with(self, targets: set[str]) -> list[dg.AssetCheckKey]:
        """The asset checks a run of these assets also targets."""
        return []

    def run_now(self, targets: set[str], fails_at: int, fail_check: bool) -> None:
        """A run that starts and ends between two evaluations."""
        self.start(targets)
        self.end(len(self.open_runs) - 1, fails_at, fail_check)

    def end(self, which: int, fails_at: int, fail_check: bool) -> None:
        """The run ends as `dbt build` would: the target at `fails_at` (if any) fails on its
        own, what is below a failure in the run is skipped, and a checked asset's test fails
        after it is built if `fail_check`."""
        if not self.open_runs:
            return
        run, targets = self.open_runs.pop(which % len(self.open_runs))
        built, failed = [], set()
        for index, name in enumerate(targets):
            if index == fails_at or set(PARENTS[name]) & failed:
                failed.add(name)
                continue
            built.append(name)
            materialization = dg.AssetMaterialization(asset_key=name)
            report_event(self.instance, run, MATERIALIZED, StepMaterializationData(materialization))
            if fail_check and name in CHECKED and not failed:
                failed.add(name)
                evaluation = dg.AssetCheckEvaluation(
                    asset_key=dg.AssetKey(name), check_name="tested", passed=False
                )
                report_event(
                    self.instance, run, DagsterEventType.ASSET_CHECK_EVALUATION, evaluation
                )
        status = DagsterEventType.RUN_FAILURE if failed else DagsterEventType.RUN_SUCCESS
        report_event(self.instance, run, status)
        self.say(
            f"run {run.run_id[:4]} ends: built {', '.join(built) or 'nothing'}, "
            f"failed or skipped {', '.join(sorted(failed)) or 'nothing'}"
        )

    def observe(self, new_data: bool) -> None:
        """An observation of `obs`, as the source observation job records one: a new data
        version if `new_data` (or the first), else the same again."""
        if new_data or self.data_version is None:
            self.data_version = next(self.data_versions)
        version = {"dagster/data_version": str(self.data_version)}
        self.instance.report_runless_asset_event(dg.AssetObservation("obs", tags=version))
        self.say(f"obs observed: data version {self.data_version}")

    def tick(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)
        true = {}
        for speedups, defs in self.defs.items():
            result = dg.evaluate_automation_conditions(
                defs=defs,
                instance=self.instance,
                evaluation_time=self.now,
                cursor=self.cursors[speedups],
            )
            self.cursors[speedups] = result.cursor
            true[speedups] = self.outcome(result)
        ours, theirs = self.sides
        self.say(f"tick: {ours} {_listed(true[True])}; {theirs} {_listed(true[False])}")
        assert true[True] == true[False], "\n".join(self.timeline)
        SEEN[frozenset(true[True])] += 1
        self.outcome_of_last_tick = true[True]

    sides = ("single node", "built-ins")

    def outcome(self, result) -> set[tuple[str, str]]:
        """The condition's own result (the first child), and what was requested."""
        return {
            (r.key.to_user_string(), which)
            for r in result.results
            for which, subset in (
                ("true", r.child_results[0].true_subset),
                ("requested", r.true_subset),
            )
            if not subset.is_empty
        }


def _listed(outcome: set[tuple[str, str]]) -> str:
    return ", ".join(f"{name} {which}" for name, which in sorted(outcome)) or "nothing"


@pytest.mark.parametrize("pair", PAIRS)
def test_the_single_node_equals_the_builtin_composition(pair: str) -> None:
    @SEQUENCES
    @given(steps=STEPS)
    def both_sides_agree(steps) -> None:
        with scratch_instance() as instance:
            machine = Instance(instance, pair)
            for step in steps:
                getattr(machine, step[0])(*step[1:])
            machine.tick(1)  # and once more after the last step

    SEEN.clear()
    both_sides_agree()
    print(f"{pair}: {len(SEEN)} different outcomes in {sum(SEEN.values())} evaluations")
    assert len(SEEN) >= 2, f"{pair}: too few different outcomes to compare: {dict(SEEN)}"


# --- evaluating only what changed -------------------------------------------------------------

VIEWS = ("a", "c")
# A test on `d` that also reads `a` (a `relationships` test): a check with its own policy.
RELATES = dg.AssetCheckKey(dg.AssetKey("d"), "relates")
EDIT = st.tuples(st.just("edit"), st.sampled_from(ORDER))
QUIET = st.tuples(st.just("quiet"), st.integers(1, 4))
# A check's result reported without a run (an outside data-quality tool), and a wipe: neither
# is a run or an event of the asset that the per-tick read of changes sees.
CHECK_WITHOUT_RUN = st.tuples(st.just("check_without_run"), st.sampled_from(CHECKED), st.booleans())
WIPE = st.tuples(st.just("wipe"), st.sampled_from(ORDER))
POLICY_STEPS = st.lists(
    st.one_of(RUN_NOW, TICK, START_RUN, END_RUN, OBSERVE, EDIT, QUIET, CHECK_WITHOUT_RUN, WIPE),
    min_size=4,
    max_size=24,
)
CARRIED: Counter = Counter()


def policies_graph(
    only_what_changed: bool, versions: dict[str, int], sensor: bool = False
) -> dg.Definitions:
    """The small graph under the shipped policies (with the speedups): `a` and `c` are views,
    `b` and `d` tables on CRON, and `d`'s test that also reads `a` runs as soon as every model
    it reads exists. Without `only_what_changed`, each policy is evaluated on every tick."""

    def shipped(condition: dg.AutomationCondition) -> dg.AutomationCondition:
        return condition if only_what_changed else evaluated_every_tick(condition)

    def policy(name: str) -> dg.AutomationCondition:
        return refresh_on_change() if name in VIEWS else refresh_daily(CRON, TIMEZONE)

    assets = [
        dg.AssetSpec(
            name,
            deps=parents,
            automation_condition=shipped(policy(name)),
            code_version=str(versions[name]),
            skippable=True,
        )
        for name, parents in PARENTS.items()
    ]
    checks = [dg.AssetCheckSpec("tested", asset=name, blocking=True) for name in CHECKED]
    checks.append(
        dg.AssetCheckSpec(
            RELATES.name,
            asset="d",
            additional_deps=["a"],
            blocking=True,
            automation_condition=shipped(run_as_soon_as_every_model_exists()),
        )
    )
    defs = with_the_sources(assets, checks)
    if not sensor:
        return defs
    everything = dg.AssetSelection.all(include_sources=True) | dg.AssetSelection.all_asset_checks()
    return dg.Definitions.merge(
        defs, dg.Definitions(sensors=[SkipsQuietTicks(SENSOR, target=everything)])
    )


SENSOR = "policies"


class WholePolicies(Instance):
    """The shipped policies on both sides: evaluated only when something they read changed,
    and on every tick. Runs of `d` run its test on several models too; SQL edits change code
    versions."""

    sides = ("only what changed", "every tick")

    def __init__(self, instance: dg.DagsterInstance):
        self.versions = dict.fromkeys(ORDER, 1)
        super().__init__(instance, pair="whole policies")
        self.sensor_defs = self.sensor_definitions()
        self.sensor_cursor: str | None = None

    def defs_for(self, speedups: bool) -> dg.Definitions:
        return policies_graph(only_what_changed=speedups, versions=self.versions)

    def sensor_definitions(self) -> dg.RepositoryDefinition:
        defs = policies_graph(only_what_changed=True, versions=self.versions, sensor=True)
        return defs.get_repository_def()

    def edit(self, name: str) -> None:
        self.versions[name] += 1
        self.defs = {side: self.defs_for(side) for side in self.defs}
        self.sensor_defs = self.sensor_definitions()
        self.say(f"{name}'s SQL edited (code version {self.versions[name]})")

    def tick(self, minutes: int) -> None:
        """Both sides, and the sensor as the daemon evaluates it (skipping quiet ticks), which
        must request what both sides do."""
        super().tick(minutes)
        sensor = self.sensor_defs.get_sensor_def(SENSOR)
        data = sensor_tick(self.sensor_defs, sensor, self.instance, self.sensor_cursor, self.now)
        skipped = self.sensor_cursor is not None and data.cursor == self.sensor_cursor
        self.sensor_cursor = data.cursor
        # The runs also run the checks of the assets they build (those with no condition).
        graph = self.sensor_defs.asset_graph
        requested = {
            (key.to_user_string(), "requested")
            for request in data.run_requests or []
            for key in [*(request.asset_selection or []), *(request.asset_check_keys or [])]
            if graph.get(key).automation_condition is not None
        }
        self.say(f"   the sensor {'skipped the tick' if skipped else 'evaluated'}: "
                 f"{_listed(requested)}")  # fmt: skip
        assert requested == self.outcome_of_last_tick, "\n".join(self.timeline)
        CARRIED["sensor ticks"] += 1
        CARRIED["sensor ticks skipped"] += skipped
        self.sensor_skipped_last_tick = skipped

    def check_without_run(self, name: str, passed: bool) -> None:
        key = dg.AssetKey(name)
        evaluation = dg.AssetCheckEvaluation(asset_key=key, check_name="tested", passed=passed)
        self.instance.report_runless_asset_event(evaluation)
        self.say(f"{name}'s test reported without a run: {'passes' if passed else 'fails'}")

    def wipe(self, name: str) -> None:
        self.instance.wipe_assets([dg.AssetKey(name)])
        self.say(f"{name} wiped")

    def quiet(self, ticks: int) -> None:
        """Ticks a minute apart with nothing in between: where policies are carried forward."""
        for _ in range(ticks):
            self.tick(1)

    def checks_run_with(self, targets: set[str]) -> list[dg.AssetCheckKey]:
        return [RELATES] if "d" in targets else []

    def end(self, which: int, fails_at: int, fail_check: bool) -> None:
        if not self.open_runs:
            return
        run, targets = self.open_runs[which % len(self.open_runs)]
        super().end(which, fails_at, fail_check)
        latest = self.instance.get_latest_materialization_event(dg.AssetKey("d"))
        if "d" in targets and latest is not None and latest.run_id == run.run_id:
            evaluation = dg.AssetCheckEvaluation(
                asset_key=RELATES.asset_key, check_name=RELATES.name, passed=not fail_check
            )
            report_event(self.instance, run, DagsterEventType.ASSET_CHECK_EVALUATION, evaluation)
            self.say(f"   its test {RELATES.name} {'fails' if fail_check else 'passes'}")

    def outcome(self, result) -> set[tuple[str, str]]:
        CARRIED["carried forward"] += sum(isinstance(r, CarriedForward) for r in result.results)
        CARRIED["entities, both sides"] += len(result.results)
        return {(r.key.to_user_string(), "requested") for r in result.results if r.true_subset.size}


def test_evaluating_only_what_changed_requests_what_evaluating_every_tick_does() -> None:
    """On random instance states (runs, failed tests, observations, SQL edits, cron ticks),
    over evaluations with cursors, the shipped policies request exactly the same assets and
    tests whether each is evaluated only when something it reads changed or on every tick;
    and so does the shipped sensor, which skips a tick on which nothing happened
    (internals/quiet_ticks.py), evaluated as the daemon's code server evaluates it."""

    @SEQUENCES
    @given(steps=POLICY_STEPS)
    def both_sides_agree(steps) -> None:
        with scratch_instance() as instance:
            machine = WholePolicies(instance)
            for step in steps:
                getattr(machine, step[0])(*step[1:])
            machine.quiet(3)  # and a few more after the last step

    SEEN.clear(), CARRIED.clear()
    both_sides_agree()
    print(f"{len(SEEN)} different outcomes in {sum(SEEN.values())} evaluations; {dict(CARRIED)}")
    assert len(SEEN) >= 3, f"too few different outcomes to compare: {dict(SEEN)}"
    # A proof that never carried anything forward would prove nothing: at least a fifth of
    # our side's evaluations (half of all) were, and a tenth of the sensor's ticks skipped.
    assert CARRIED["carried forward"] * 10 >= CARRIED["entities, both sides"], dict(CARRIED)
    assert CARRIED["sensor ticks skipped"] * 10 >= CARRIED["sensor ticks"], dict(CARRIED)


def test_safe_to_run_names_what_holds_each_asset_back() -> None:
    """What the UI shows under "not running, no parent running or missing": one child per
    thing that holds the asset back, named with why (the asset itself running, a parent
    running or missing), and nothing for an asset that may run."""
    with scratch_instance() as instance:
        machine = Instance(instance, "SafeToRun")
        machine.start({"a"})
        result = dg.evaluate_automation_conditions(
            defs=machine.defs[True], instance=instance, evaluation_time=START
        )
    named = {
        evaluated.key.to_user_string(): [
            held.condition.name for held in evaluated.child_results[0].child_results
        ]
        for evaluated in result.results
    }
    # a, never built and now running, holds c back for both reasons; obs was never observed.
    assert named == {
        "a": ["a: running"],
        "b": ["obs: not observed with data yet"],
        "c": ["a: running", "a: missing"],
        "d": ["c: missing"],
    }


def test_a_run_that_ends_without_building_anything_has_its_assets_evaluated_again() -> None:
    """A run's end is no asset event when it built nothing: the edited view it held back (it
    was running) is requested on the next tick, evaluated only on change as on every tick."""
    with scratch_instance() as instance:
        machine = WholePolicies(instance)
        machine.quiet(2)
        machine.start({"a"})
        machine.edit("a")
        machine.quiet(3)
        assert machine.outcome_of_last_tick == set()
        machine.end(0, fails_at=0, fail_check=False)
        machine.tick(1)
        assert machine.outcome_of_last_tick == {("a", "requested")}, "\n".join(machine.timeline)


def everything_built_and_settled(instance: dg.DagsterInstance) -> WholePolicies:
    machine = WholePolicies(instance)
    machine.run_now(set(ORDER), fails_at=len(ORDER), fail_check=False)
    machine.quiet(3)
    assert machine.outcome_of_last_tick == set()
    return machine


def test_a_wiped_view_is_requested_again() -> None:
    """A wipe is no event of the asset that the per-tick read sees; the asset's latest event
    ids, part of what the last evaluation saw, are."""
    with scratch_instance() as instance:
        machine = everything_built_and_settled(instance)
        machine.wipe("c")
        machine.tick(1)
        assert machine.outcome_of_last_tick == {("c", "requested")}, "\n".join(machine.timeline)


def test_an_sql_edit_after_a_skipped_tick_is_requested_by_the_sensor() -> None:
    """New definitions are no event: the sensor that skipped the quiet ticks before an edit
    evaluates the next one, and requests the edited view with what follows it (the view
    below, the test on several models that reads it), as both sides do."""
    with scratch_instance() as instance:
        machine = everything_built_and_settled(instance)
        assert machine.sensor_skipped_last_tick, "\n".join(machine.timeline)
        machine.edit("a")
        machine.tick(1)  # the sensor's requests must equal both sides' (tick() asserts it)
        requested = {(name, "requested") for name in ("a", "c", RELATES.to_user_string())}
        assert machine.outcome_of_last_tick == requested, "\n".join(machine.timeline)


def test_the_sensor_holds_a_view_back_by_a_failed_run_until_its_parent_is_built() -> None:
    """The sensor remembers, from one tick to the next, that a parent's latest run failed
    (internals/latest_runs.py), and forgets it when the parent changes: `c` stays held back by
    `a`'s failed run over two builds of its other parent `b`, and is requested once `a` is
    built again, as both sides request it (tick() asserts the sensor's requests are theirs)."""
    with scratch_instance() as instance:
        machine = everything_built_and_settled(instance)
        machine.run_now({"a"}, fails_at=0, fail_check=False)
        machine.tick(1)
        for _ in range(2):
            machine.run_now({"b"}, fails_at=len(ORDER), fail_check=False)
            machine.tick(1)
            assert machine.outcome_of_last_tick == set(), "\n".join(machine.timeline)
        machine.run_now({"a"}, fails_at=len(ORDER), fail_check=False)
        machine.tick(1)
        assert machine.outcome_of_last_tick == {("c", "requested")}, "\n".join(machine.timeline)


def test_node_cursors_packed_by_an_earlier_version_are_read_as_none() -> None:
    """A cursor stored before the packing changed (base85 until 2026-12-06) does not fail the
    tick: its node cursors read as none, and the policy's nodes start afresh, as Dagster starts
    those of a condition whose structure changed."""
    node_cursors = {"0": "a node's cursor", "0.1": None}
    assert _unpacked(_packed(node_cursors)) == node_cursors
    serialized = dg.serialize_value(node_cursors).encode()
    assert _unpacked(base64.b85encode(zlib.compress(serialized, 1)).decode()) is None
