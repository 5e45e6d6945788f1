"""The policies under random interleavings, checked tick by tick against the README's model.

A Hypothesis state machine drives a real Dagster instance and the project's real conditions
(the component's definitions of a copy of the shipped dbt project, with one table on a
`*/15` cron through `cron_by_tag`) through random sequences of: runs of any assets that
succeed, fail part-way or stay in progress and end later, with the tests on more than one
model (`relationships`) that they plan; runs in which a blocking dbt test fails, one on a
single model or a `relationships` test (dbt skips what is below its model, even a child that
reads only one of the test's models), fixed by a later build or a later run of the test; the
sensor's own requests run, assets and tests;
SQL edits of views and tables, of a macro and of an ephemeral model (new code versions,
computed as the component computes them); a view and a table added to the project; the clock
moving across cron ticks; and evaluations. Each sequence draws which nodes reuse (dbt State's
`state` config, `reuse.py`), with which lag tolerance and `require_fresh_data_from`. After
every evaluation, the sets of requested assets and of requested tests on more than one model
must equal `policy_model.ReferenceModel`'s, exactly.

Runs are reported to the instance as Dagster records a launched run (its asset selection, its
planned and reported materializations with the code versions it started with, its end, at the
sequence's clock) without running dbt, so hundreds of sequences
run in minutes; `test_policies_match_the_model_with_real_dbt_runs` runs dbt for real.

A failure prints the shrunk sequence as a timeline, in the form `nox -s demo` prints.
`nox -s fuzz -- --examples N` runs longer, with a random seed that it prints.
"""

import contextlib
import copy
import io
import itertools
import json
import os
import sys
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import (
    DagsterEventType,
    StepMaterializationData,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)
from policy_model import (
    DAILY,
    EVERY_15_MINUTES,
    ModelAsset,
    ModelTest,
    ReferenceModel,
    Reuse,
    checked_model,
)

from dbt_automation_demo.automation import refresh_daily, refresh_on_change
from dbt_automation_demo.components.code_versions import CompiledSqlCodeVersions
from dbt_automation_demo.components.custom_dbt_component import speedups_in_environment
from dbt_automation_demo.internals.dagster_names import CODE_VERSION_TAG
from dbt_automation_demo.internals.simulated_clock import SimulatedClock
from dbt_automation_demo.reuse import MATERIALIZATION_TAG, ReuseSettings
from harness import (
    SHIPPED_DBT_PROJECT,
    add_a_landing_zone,
    build_defs,
    check_name,
    checks_requested_by,
    copy_dbt_project,
    land,
    materialize,
    parse,
    report_check_result,
    report_event,
    scratch_instance,
    start_recorded_run,
)

pytestmark = pytest.mark.usefixtures("dbt_from_a_preloaded_process")  # tests/preloaded_dbt.py

# CI: a fixed seed and a budget that fits `nox -s tests`; `nox -s fuzz` sets both.
EXAMPLES = int(os.environ.get("POLICY_FUZZ_EXAMPLES", "100"))
RANDOM_SEED = "POLICY_FUZZ_EXAMPLES" in os.environ
# Twenty minutes before the daily tick, and never on a minute: see `policy_model.latest_cron_tick`.
START = datetime(2031, 3, 4, 5, 40, 7, tzinfo=UTC)
FREQUENT_TAG = "frequent"
FREQUENT_TABLE = "order_summary"
ADDED_VIEW, ADDED_TABLE = "stg_customer_countries", "country_counts"
ADDED_MODELS = {
    f"staging/{ADDED_VIEW}.sql": "select distinct country from {{ ref('stg_customers') }}\n",
    f"marts/{ADDED_TABLE}.sql": (
        f"select country, count(*) as customers from {{{{ ref('{ADDED_VIEW}') }}}} group by 1\n"
    ),
}
# Within the sensor's usual pace (to and across a `*/15` tick), and across the daily tick.
SHORT_STEPS = [
    timedelta(seconds=30),
    timedelta(minutes=1),
    timedelta(minutes=7),
    timedelta(minutes=15),
]
LONG_STEPS = [timedelta(hours=3), timedelta(hours=20)]
OPEN_RUNS_AT_MOST = 2
TALLY: Counter[str] = Counter()  # over all the sequences of one test
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
# The edits that change other models' compiled SQL: the shipped macro, and an ephemeral model
# that stg_customers inlines in the fuzz projects.
MACRO = "macro.analytics_dbt.cents_to_dollars"
EPHEMERAL, EPHEMERAL_SQL = (
    "base_customers",
    "{{ config(materialized='ephemeral') }}\nselect * from {{ ref('raw_customers') }}\n",
)
# The landing zone's sources (harness.py): one file in each, so that real dbt builds their
# views. `payments` is observed (recorded: new data or the same); `refunds` never is. A table
# reads the view over `payments`: a daily tick makes it due whether or not the source changed.
SOURCE = "landing/payments"
TABLE_OVER_THE_SOURCE = (
    "marts/payment_totals.sql",
    "select count(*) as payments from {{ ref('stg_payments') }}\n",
)
# A run's targets, as indexes into the project's sorted asset names (so they shrink well).
PICKS = st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=4)
# None: the run succeeds; N: it fails after building its first N targets, in dbt's order.
FAILURES = st.none() | st.integers(min_value=0, max_value=4)
# Each node's reuse, drawn per sequence (None first: a failure shrinks to fewer reusing nodes),
# with tolerances under, across and over the steps of the clock.
REUSE_CHOICES = [
    None,
    ReuseSettings(timedelta(minutes=10)),
    ReuseSettings(timedelta(minutes=45), "all"),
    ReuseSettings(timedelta(0)),
    ReuseSettings(timedelta(hours=4)),
]
MOST_ASSETS = 12  # a draw for each asset of the extended project, in name order


def fuzz_projects(folder: Path, source: Path) -> tuple[Path, Path]:
    """Two parsed copies of the shipped dbt project: with `order_summary` tagged for the `*/15`
    cron, a landing zone read through dbt sources and a table over it, and the same with a view
    and a table added."""
    base = copy_dbt_project(folder / "base" / "analytics_dbt", source=source)
    add_a_landing_zone(base)
    land(base, "payments", 1)
    land(base, "refunds", 1)
    path, table_sql = TABLE_OVER_THE_SOURCE
    (base / "models" / path).write_text(table_sql)
    sql = base / "models" / "marts" / f"{FREQUENT_TABLE}.sql"
    sql.write_text(f"{{{{ config(tags=['{FREQUENT_TAG}']) }}}}\n{sql.read_text()}")
    (base / "models" / "staging" / f"{EPHEMERAL}.sql").write_text(EPHEMERAL_SQL)
    customers = base / "models" / "staging" / "stg_customers.sql"
    customers.write_text(
        customers.read_text().replace("ref('raw_customers')", f"ref('{EPHEMERAL}')")
    )
    extended = copy_dbt_project(folder / "extended" / "analytics_dbt", source=base)
    for path, model_sql in ADDED_MODELS.items():
        (extended / "models" / path).write_text(model_sql)
    parse(base)
    parse(extended)
    return base, extended


def policy_defs(project: Path) -> dg.Definitions:
    return build_defs(project, cron_by_tag={FREQUENT_TAG: EVERY_15_MINUTES})


def cron_of(name: str) -> str:
    return EVERY_15_MINUTES if name == FREQUENT_TABLE else DAILY


def reusing_policy(spec: dg.AssetSpec, reuse: ReuseSettings) -> dg.AutomationCondition:
    """The component's policy for the node with a `state` config."""
    speedups, name = speedups_in_environment(), spec.key.to_user_string()
    if spec.tags.get(MATERIALIZATION_TAG) == "view":
        return refresh_on_change(speedups, reuse)
    return refresh_daily(cron_of(name), "UTC", speedups, reuse)


def manifest_of(project: Path) -> dict:
    return json.loads((project / "target" / "manifest.json").read_text())


class EditedManifest:
    """A project's manifest, edited in memory as a person edits a macro or a model's SQL, and
    the code versions the component computes from it."""

    def __init__(self, manifest: dict):
        self.manifest = copy.deepcopy(manifest)
        self.versions = self._code_versions()

    def edit(self, where: dict, field: str, text: str) -> dict[str, str]:
        """Append `text` to `where[field]`; the assets whose code versions changed, and how."""
        where[field] += text
        before, self.versions = self.versions, self._code_versions()
        return {name: version for name, version in self.versions.items() if before[name] != version}

    def _code_versions(self) -> dict[str, str]:
        versions = CompiledSqlCodeVersions(self.manifest)
        return {
            node["name"]: versions.of(node)
            for node in self.manifest["nodes"].values()
            if node["resource_type"] in ("model", "seed")
            and node["config"]["materialized"] != "ephemeral"
        }


def model_assets(defs: dg.Definitions, reuse: dict[str, ReuseSettings]) -> list[ModelAsset]:
    """What the model is told of the project: each asset's parents, its materialization and
    its reuse."""
    graph = defs.resolve_asset_graph()
    assets = []
    for key in graph.materializable_asset_keys:
        node, name = graph.get(key), key.to_user_string()
        is_view = node.tags.get(MATERIALIZATION_TAG) == "view"
        cron = None if is_view else cron_of(name)
        parents = frozenset(parent.to_user_string() for parent in node.parent_keys)
        settings = reuse.get(name)
        told = settings and Reuse(settings.lag_tolerance, settings.require_fresh_data_from == "all")
        assets.append(ModelAsset(name, parents, is_view, cron, told or None))
    return assets


def model_tests(defs: dg.Definitions) -> list[ModelTest]:
    """The blocking tests on more than one model (their checks have a condition of their own)
    and the models each reads."""
    graph = defs.resolve_asset_graph()
    return [
        ModelTest(
            check_name(key),
            key.asset_key.to_user_string(),
            frozenset(parent.to_user_string() for parent in graph.get(key).parent_entity_keys),
        )
        for key in graph.asset_check_keys
        if graph.get(key).automation_condition is not None
    ]


def _check_key(test: str) -> dg.AssetCheckKey:
    model, _, name = test.partition(":")
    return dg.AssetCheckKey(dg.AssetKey(model), name)


def as_drawn(
    defs: dg.Definitions, versions: dict[str, str], reuse: dict[str, ReuseSettings]
) -> dg.Definitions:
    """The definitions with these assets' code versions changed, as an SQL edit changes them,
    and these assets reusing, as a `state` config in their dbt project makes them."""

    def drawn(spec: dg.AssetSpec) -> dg.AssetSpec:
        name = spec.key.to_user_string()
        if name in versions:
            spec = spec.replace_attributes(code_version=versions[name])
        if name in reuse:
            spec = spec.replace_attributes(automation_condition=reusing_policy(spec, reuse[name]))
        return spec

    return defs.map_asset_specs(func=drawn)


def first_blocking_check(defs: dg.Definitions, name: str) -> str | None:
    """The first of the asset's blocking tests on it alone, as `model:test`."""
    graph = defs.resolve_asset_graph()
    blocking = [
        key
        for key in graph.get(dg.AssetKey(name)).check_keys
        if graph.get(key).blocking and graph.get(key).automation_condition is None
    ]
    return check_name(min(blocking)) if blocking else None


class PolicyInterleavings(RuleBasedStateMachine):
    """One sequence: a fresh instance, the shipped project, and the model beside them."""

    # The project's definitions and manifests before and after the models are added: set by
    # `check()`; and every asset name either holds.
    base_defs: dg.Definitions
    all_names: list[str]
    extended_defs: dg.Definitions
    base_manifest: dict
    extended_manifest: dict
    real_dbt = False

    open_runs = Bundle("open_runs")

    def __init__(self):
        super().__init__()
        self.stack = ExitStack()
        self.instance = self.stack.enter_context(scratch_instance())
        self.project_defs = self.base_defs
        self.manifest = EditedManifest(self.base_manifest)
        self.versions: dict[str, str] = {}
        self.reuse: dict[str, ReuseSettings] = {}
        self._defs_key, self._defs = None, self.project_defs
        self.now = START
        self.model = ReferenceModel(clock=START)
        self.run_versions: dict[str, dict[str, str | None]] = {}
        self.cursor = None
        self.last_requested: set[str] = set()
        self.last_requested_tests: set[str] = set()
        self.run_numbers = itertools.count(1)
        # Dagster's clock, at the sequence's: the model has runs just after the last tick.
        self.clock = SimulatedClock()
        self.source_version = 0
        self.timeline: list[str] = []
        if self.real_dbt:
            warehouse = Path(os.environ["DBT_DUCKDB_PATH"])
            warehouse.unlink(missing_ok=True)
            warehouse.with_suffix(".duckdb.wal").unlink(missing_ok=True)

    def teardown(self):
        # A sequence that ran to its end is checked once more, as the sensor would look again:
        # the short sequences Hypothesis tries first may hold no tick at all. (Hypothesis calls
        # teardown in a `finally`; after a failed step there is nothing more to check.)
        try:
            if sys.exc_info()[0] is None and self.timeline:
                self.evaluate_after(SHORT_STEPS[0])
        finally:
            self.stack.close()

    # -- what a person, the sensor's runs and the clock do between two evaluations ---------

    def say(self, what: str) -> None:
        self.timeline.append(f"{self.now:%a %H:%M:%S}  {what}")

    @property
    def defs(self) -> dg.Definitions:
        key = (id(self.project_defs), tuple(sorted(self.versions.items())), tuple(self.reuse))
        if self._defs_key != key:
            self._defs_key = key
            self._defs = as_drawn(self.project_defs, self.versions, self.reuse)
        return self._defs

    def define(self) -> None:
        """Tell the model what the project now holds."""
        defs = self.project_defs
        self.model.define(model_assets(defs, self.reuse), model_tests(defs))

    @property
    def asset_names(self) -> list[str]:
        return sorted(asset.name for asset in self.model.assets.values())

    def in_dependency_order(self, names) -> list[str]:
        return [name for name in self.model.in_dependency_order() if name in names]

    def start(self, targets: list[str], tests: set[str] | None = None) -> tuple[str, dg.DagsterRun]:
        """A run of the asset job for `targets` and `tests` (by default, the tests on more than
        one model that a run of `targets` by hand plans), recorded as a launched one is: its
        selection (what `any_deps_updated()` reads) and its planned materializations and checks
        (what `in_progress()` reads)."""
        if tests is None:
            tests = self.model.tests_planned_by_hand(targets)
        with self.clock.at(self.now):
            run = start_recorded_run(self.instance, targets, {_check_key(test) for test in tests})
        graph = self.defs.resolve_asset_graph()
        self.run_versions[run.run_id] = {
            name: graph.get(dg.AssetKey(name)).code_version for name in targets
        }
        label = f"run {next(self.run_numbers)}"
        self.model.run_started(run.run_id, targets, tests)
        return label, run

    def end(
        self, run: dg.DagsterRun, built: list[str], succeeded: bool, failed_test: str | None = None
    ) -> str:
        """The run ends, as dbt would have run it: `built` built, then every planned test that
        could run (each model it reads built), `failed_test` failing. What its tests did."""
        failed = {failed_test} if failed_test else set()
        ran = self.model.tests_that_run(run.run_id, built) | failed
        with self.clock.at(self.now):
            for name in built:
                # A run records the code version it started with on each materialization.
                version = self.run_versions[run.run_id][name]
                tags = {CODE_VERSION_TAG: version} if version else None
                data = StepMaterializationData(dg.AssetMaterialization(asset_key=name, tags=tags))
                report_event(self.instance, run, DagsterEventType.ASSET_MATERIALIZATION, data)
            for test in sorted(ran):
                passed = test not in failed
                report_check_result(self.instance, run, _check_key(test), passed=passed)
            status = DagsterEventType.RUN_SUCCESS if succeeded else DagsterEventType.RUN_FAILURE
            report_event(self.instance, run, status)
        self.model.run_ended(run.run_id, built, failed_tests=failed)
        not_run = self.model.tests_planned[run.run_id] - ran
        TALLY["tests on several models run"] += len(ran - failed)
        TALLY["tests on several models planned, not run"] += len(not_run)
        return "".join(
            f"; {_short(test)} {'FAILED' if test in failed else 'passed'}" for test in sorted(ran)
        ) + "".join(f"; {_short(test)} not run" for test in sorted(not_run))

    def run_now(
        self,
        targets: list[str],
        built_before_failing: int | None,
        who: str,
        tests: set[str] | None = None,
    ) -> None:
        """A run that starts and ends between two evaluations."""
        targets = self.in_dependency_order(targets)
        # A real run plans the tests of its targets, as a run by hand does.
        by_hand = tests is None or tests == self.model.tests_planned_by_hand(targets)
        if self.real_dbt and built_before_failing is None and by_hand:
            self.run_dbt(targets, who)
            return
        label, run = self.start(targets, tests)
        built = targets if built_before_failing is None else targets[:built_before_failing]
        tested = self.end(run, built, succeeded=built_before_failing is None)
        what = _listed([*targets, *(tests or ())])
        self.say(f"{who:<6} {label} of {what}: {_outcome(built, targets)}{tested}")

    def run_dbt(self, targets: list[str], who: str) -> None:
        """A real dbt build of the targets, as a launched run records it."""
        # dbt's log goes; the outcome is below.
        with contextlib.redirect_stdout(io.StringIO()), self.clock.at(self.now):
            result = materialize(
                self.defs, self.instance, targets, raise_on_error=False, run_config=QUIET
            )
        built = [
            event.asset_key.to_user_string() for event in result.get_asset_materialization_events()
        ]
        TALLY["real dbt builds"] += 1
        self.model.run_started(result.run_id, targets)
        expected = self.model.tests_that_run(result.run_id, built)
        self.model.run_ended(result.run_id, built)
        evaluated = {
            check_name(evaluation.asset_check_key): evaluation.passed
            for evaluation in result.get_asset_check_evaluations()
        }
        passed = {test for test, ok in evaluated.items() if ok and test in self.model.tests}
        TALLY["tests on several models run by dbt"] += len(passed)
        self.say(f"{who:<6} dbt build {_listed(targets)}: {_outcome(built, targets)}")
        if passed != expected:
            raise AssertionError(
                "\n".join(
                    [
                        "dbt ran other tests on several models than the model expected:",
                        *self.timeline,
                        f"                passed: {_listed(passed)}",
                        f"                the model expected: {_listed(expected)}",
                    ]
                )
            )

    @initialize(
        build_first=st.booleans(),
        reuse=st.lists(st.sampled_from(REUSE_CHOICES), min_size=MOST_ASSETS, max_size=MOST_ASSETS),
    )
    def begin(self, build_first, reuse):
        drawn = zip(self.all_names, reuse, strict=False)
        self.reuse = {name: choice for name, choice in drawn if choice}
        self.define()
        self.say("start  a fresh instance")
        for name, choice in sorted(self.reuse.items()):
            self.say(f"       {name} reuses its builds ({choice.label})")
        if build_first:
            self.run_now(self.asset_names, None, "you")

    @rule(new_data=st.booleans())
    def observe_the_source(self, new_data):
        """The source observation job's run: the source's data version, new or the same."""
        if new_data or SOURCE not in self.model.built:
            self.source_version += 1
        version = {"dagster/data_version": str(self.source_version)}
        with self.clock.at(self.now):
            self.instance.report_runless_asset_event(dg.AssetObservation(SOURCE, tags=version))
        self.model.observed(SOURCE, new_data)
        TALLY["source observations"] += 1
        seen = "new data" if new_data else "the same data"
        self.say(f"source {SOURCE} observed: {seen} (data version {self.source_version})")

    @rule(picks=PICKS, failure=FAILURES)
    def run_by_hand(self, picks, failure):
        names = self.asset_names
        self.run_now(sorted({names[pick % len(names)] for pick in picks}), failure, "you")

    @precondition(lambda self: self.last_requested or self.last_requested_tests)
    @rule(failure=FAILURES)
    def run_the_sensors_request(self, failure):
        targets, tests = sorted(self.last_requested), self.last_requested_tests
        self.last_requested, self.last_requested_tests = set(), set()
        self.run_now(targets, failure, "sensor", tests)

    @precondition(lambda self: len(self.model.running) < OPEN_RUNS_AT_MOST)
    @rule(
        target=open_runs,
        picks=st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=3),
    )
    def start_a_run(self, picks):
        names = self.asset_names
        targets = self.in_dependency_order({names[pick % len(names)] for pick in picks})
        label, run = self.start(targets)
        self.say(f"you    {label} of {_listed(targets)} starts")
        return (label, run, targets)

    @precondition(
        lambda self: (
            (self.last_requested or self.last_requested_tests)
            and len(self.model.running) < OPEN_RUNS_AT_MOST
        )
    )
    @rule(target=open_runs)
    def the_sensors_request_starts(self):
        targets, tests = self.in_dependency_order(self.last_requested), self.last_requested_tests
        self.last_requested, self.last_requested_tests = set(), set()
        label, run = self.start(targets, tests)
        self.say(f"sensor {label} of {_listed([*targets, *tests])} starts")
        return (label, run, targets)

    @rule(started=consumes(open_runs), failure=FAILURES)
    def a_run_ends(self, started, failure):
        label, run, targets = started
        built = targets if failure is None else targets[:failure]
        tested = self.end(run, built, succeeded=failure is None)
        self.say(f"       {label} ends: {_outcome(built, targets)}{tested}")

    @rule(picks=PICKS, culprit=st.integers(min_value=0, max_value=20))
    def run_with_a_failing_test(self, picks, culprit):
        """A run by hand in which a blocking test of a target fails after the models it reads
        are built: a test on that target alone, or one that also reads other models. dbt skips
        everything below the target in the run (with `dbt-blocking-tests`, even a child that
        reads only one of the test's models), and the run fails. A later build of that target,
        or a later run of the test that passes, fixes it."""
        names = self.asset_names
        targets = self.in_dependency_order({names[pick % len(names)] for pick in picks})
        can_fail = sorted(
            {check for name in targets if (check := first_blocking_check(self.defs, name))}
            | {
                test
                for test in self.model.tests_planned_by_hand(targets)
                if self.model.tests[test].reads <= set(targets) | self.model.built
            }
        )
        if not can_fail:
            return
        failing = can_fail[culprit % len(can_fail)]
        model = checked_model(failing)
        built, not_built = [], set()
        for name in targets:
            if self.model.assets[name].parents & (not_built | {model}):
                not_built.add(name)
            else:
                built.append(name)
        label, run = self.start(targets)
        tested = self.end(run, built, succeeded=False, failed_test=failing)
        TALLY["runs with a failing test"] += 1
        if failing in self.model.tests:
            TALLY["runs with a failing test on several models"] += 1
        self.say(
            f"you    {label} of {_listed(targets)}: {_short(failing)} FAILED, "
            f"{_listed(not_built) if not_built else 'nothing'} skipped{tested}"
        )

    @rule()
    def edit_the_macro(self):
        self.edited(f"the macro {MACRO}", self.manifest.manifest["macros"][MACRO], "macro_sql")

    @rule()
    def edit_the_ephemeral_model(self):
        node = self.manifest.manifest["nodes"][f"model.analytics_dbt.{EPHEMERAL}"]
        self.edited(f"{EPHEMERAL}.sql (ephemeral)", node, "raw_code")

    @rule(comment=st.sampled_from(["\n-- a comment", "/* a comment */ ", "  {# a comment #}\n"]))
    def edit_only_a_comment_of_the_macro(self, comment):
        macro = self.manifest.manifest["macros"][MACRO]
        changed = self.manifest.edit(macro, "macro_sql", comment)
        assert changed == {}, f"a comment changed the code versions of {_listed(changed)}"
        TALLY["comment-only edits"] += 1
        self.say(f"you    add a comment to the macro {MACRO} and reload: nothing changes")

    def edited(self, what: str, where: dict, field: str) -> None:
        changed = self.manifest.edit(where, field, f"\n{{% set edit = {len(self.timeline)} %}}")
        for name, version in changed.items():
            self.versions[name] = version
            self.model.edit(name)
        TALLY["macro or ephemeral edits"] += 1
        self.say(f"you    edit {what} and reload: new code version of {_listed(changed)}")

    @rule(pick=st.integers(min_value=0, max_value=20))
    def edit_sql(self, pick):
        names = self.asset_names
        name = names[pick % len(names)]
        self.versions[name] = f"edit-{len(self.timeline)}"
        self.model.edit(name)
        self.say(f"you    edit {name}.sql and reload")

    @precondition(lambda self: self.project_defs is self.base_defs)
    @rule()
    def add_models(self):
        self.project_defs = self.extended_defs
        self.manifest = EditedManifest(self.extended_manifest)
        self.define()
        self.say(f"you    add {ADDED_VIEW} (a view) and {ADDED_TABLE} (a table), and reload")

    @rule(step=st.sampled_from(SHORT_STEPS))
    def tick(self, step):
        self.evaluate_after(step)

    @rule(step=st.sampled_from(LONG_STEPS))
    def tick_hours_later(self, step):
        self.evaluate_after(step)

    def evaluate_after(self, step: timedelta) -> None:
        self.now += step
        result = dg.evaluate_automation_conditions(
            defs=self.defs, instance=self.instance, evaluation_time=self.now, cursor=self.cursor
        )
        self.cursor = result.cursor
        requested = {
            key.to_user_string()
            for key in self.defs.resolve_asset_graph().materializable_asset_keys
            if result.get_num_requested(key)
        }
        tests = checks_requested_by(result)
        expected = self.model.tick(self.now)
        expected_tests = self.model.tests_requested
        TALLY["ticks evaluated"] += 1
        TALLY["nodes held back by reuse"] += len(self.model.held_back)
        TALLY["tests on several models requested"] += len(tests)
        self.last_requested, self.last_requested_tests = requested, tests
        held_back = self.model.held_back and f" (the model reuses {_listed(self.model.held_back)})"
        self.say(f"tick   requested: {_listed([*requested, *map(_short, tests)])}{held_back or ''}")
        if requested != expected or tests != expected_tests:
            raise AssertionError(
                "\n".join(
                    [
                        "the policies and the README's model disagree:",
                        *self.timeline,
                        "                the model expected: "
                        + _listed([*expected, *map(_short, expected_tests)]),
                    ]
                )
            )


def _listed(names) -> str:
    return ", ".join(sorted(names)) or "nothing"


def _short(test: str) -> str:
    """A test's name in a timeline, cut at 40 characters."""
    return test if len(test) <= 40 else f"{test[:39]}…"


def _outcome(built: list[str], targets: list[str]) -> str:
    if built == targets:
        return "succeeded"
    return f"FAILED after building {_listed(built)}" if built else "FAILED"


class PolicyInterleavingsWithRealDbt(PolicyInterleavings):
    """The same, but every run that succeeds runs dbt for real on a DuckDB file."""

    real_dbt = True


@pytest.fixture(scope="module")
def projects(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("interleavings")
    with pytest.MonkeyPatch.context() as env:
        # One DuckDB file for both projects (a model added keeps the tables built before),
        # named the same for the parse and the runs, so dbt's partial parse stays valid.
        env.setenv("DBT_DUCKDB_PATH", str(folder / "warehouse" / "analytics.duckdb"))
        (folder / "warehouse").mkdir()
        yield fuzz_projects(folder, SHIPPED_DBT_PROJECT)


def check(machine: type[PolicyInterleavings], projects, examples: int, steps: int) -> None:
    machine.base_defs, machine.extended_defs = (policy_defs(project) for project in projects)
    machine.base_manifest, machine.extended_manifest = (manifest_of(p) for p in projects)
    names = machine.extended_defs.resolve_asset_graph().materializable_asset_keys
    machine.all_names = sorted(key.to_user_string() for key in names)
    TALLY.clear()
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            derandomize=not RANDOM_SEED,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
    print(f"{machine.__name__}: {examples} sequences, {dict(TALLY)}")


@pytest.mark.interleavings
def test_policies_match_the_model_under_random_interleavings(projects):
    check(PolicyInterleavings, projects, examples=EXAMPLES, steps=40)
    drawn = (
        "runs with a failing test",
        "macro or ephemeral edits",
        "comment-only edits",
    )
    # A few sequences (`nox -s fuzz -- --examples 2`) may draw no observation; CI's draw many.
    if EXAMPLES >= 20:
        drawn += (
            "source observations",
            "tests on several models run",
            "tests on several models planned, not run",
            "runs with a failing test on several models",
            "nodes held back by reuse",
        )
    assert [what for what in drawn if TALLY[what] == 0] == []


@pytest.mark.interleavings
def test_policies_match_the_model_with_real_dbt_runs(projects):
    check(PolicyInterleavingsWithRealDbt, projects, examples=max(3, EXAMPLES // 20), steps=20)
    assert TALLY["real dbt builds"] > 0
    assert TALLY["ticks evaluated"] > 0
