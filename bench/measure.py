"""The four side-by-side measurements of `nox -s bench`: ours against the stock alternative.

Each returns a `Comparison`: the median seconds of both sides over the same repetitions,
taken alternately (ours, stock, ours, stock, ...) so that drift on a noisy machine hits both.
"""

import gc
import itertools
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import dagster as dg
import yaml
from dagster.components.testing.utils import component_defs
from dagster_dbt import DbtProject, DbtProjectComponent

from dbt_automation_demo.components.custom_dbt_component import (
    MATERIALIZATION_TAG,
    AutomationSensorArgs,
    CustomDbtComponent,
)
from dbt_automation_demo.internals.collector import collector_paused
from dbt_automation_demo.internals.dagster_names import DATA_VERSION_TAG
from dbt_automation_demo.internals.duckdb_file import release_duckdb_file
from dbt_automation_demo.internals.simulated_clock import SimulatedClock
from dbt_automation_demo.internals.what_changed import CarriedForward, evaluated_every_tick
from dbt_automation_demo.replay import (
    copy_dagster_project,
    copy_dbt_project,
    parse,
    project_env,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DBT_PROJECT = REPO_ROOT / "analytics_dbt"
DEMO_DEFS_YAML = REPO_ROOT / "src" / "dbt_automation_demo" / "defs" / "analytics" / "defs.yaml"
# Mid-morning of a fixed day: the ticks measured never cross the daily 06:00 cron tick.
FIRST_TICK = datetime(2031, 3, 4, 9, 0, tzinfo=UTC)
# The run's events still go to the instance; only the console copy (not in `dbt build`) is cut.
QUIET_RUN = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
T = TypeVar("T")


@dataclass
class Comparison:
    """One figure: our side against the stock side, both in median seconds."""

    measure: str
    models: int | None
    ours: str
    stock: str
    ours_seconds: float
    stock_seconds: float
    samples: int
    details: dict[str, float | int] = field(default_factory=dict)
    size_unit: str = "models"  # what `models` counts

    @property
    def ratio(self) -> float:
        return self.ours_seconds / self.stock_seconds

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def alternate(ours: Callable[[], float], stock: Callable[[], float], repeat: int) -> tuple:
    """Run both sides `repeat` times, alternately; each call returns the seconds it measured."""
    return tuple(alternate_all([ours, stock], repeat))


def alternate_all(sides: Sequence[Callable[[], float]], repeat: int) -> list[float]:
    """Each side's median over `repeat` rounds, each round calling every side in turn."""
    times: list[list[float]] = [[] for _ in sides]
    for _ in range(repeat):
        for side, side_times in zip(sides, times, strict=True):
            side_times.append(side())
    return [statistics.median(side_times) for side_times in times]


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def with_one_collection(evaluate: Callable[[], T]) -> T:
    """`evaluate()` with Python's cyclic garbage collector paused, then one full collection,
    both in the caller's timing. Otherwise a tick pays for whichever collections its
    allocations happen to trigger, at 5,000 models half of the tick measure's time. What was
    alive before is frozen first (`gc.freeze()` moves it, whatever its size): the collection
    walks what this tick made, not what the benchmark's other sides and earlier ticks keep,
    which cost a skipped tick (10 ms) 0.15 s at 100 models."""
    gc.freeze()
    with collector_paused():
        return evaluate()


@contextmanager
def long_lived_objects_frozen() -> Iterator[None]:
    """The benchmark's objects so far frozen, as a code server's definitions are after their
    one build (`collector.py`): a collection then walks what the ticks made, not both sides'
    definitions and instances, which made the per-asset cost grow with the project."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


# --- definitions build ------------------------------------------------------------------------


def definitions_build(project_dir: Path, models: int, repeat: int) -> Comparison:
    """Our component against the stock `DbtProjectComponent`, on one already-read manifest."""
    project = DbtProject(project_dir=project_dir, profiles_dir=project_dir)

    def build(component_cls: type[DbtProjectComponent]) -> float:
        # Each build leaves thousands of objects behind; without a collection first, the next
        # build (of either side) pays for collecting them, and single builds varied by 1.5x.
        gc.collect()
        return timed(
            lambda: component_defs(component=component_cls(project=project)).resolve_asset_graph()
        )

    build(DbtProjectComponent)  # reads and caches the manifest, so neither side pays for JSON
    ours, stock = alternate(
        lambda: build(CustomDbtComponent), lambda: build(DbtProjectComponent), repeat
    )
    return Comparison(
        "definitions build",
        models,
        "CustomDbtComponent",
        "DbtProjectComponent",
        ours,
        stock,
        repeat,
    )


# --- instances with every asset built, and data landing ---------------------------------------


@contextmanager
def instance_in(home: Path, consolidated: bool = False) -> Iterator[dg.DagsterInstance]:
    """A real SQLite instance in `home`: Dagster's default storages, or its event log in one
    database (`consolidated`: a run's events are not a database each, as PostgreSQL keeps one
    table)."""
    home.mkdir(parents=True, exist_ok=True)
    config = "telemetry:\n  enabled: false\n"
    if consolidated:
        config += (
            "event_log_storage:\n"
            "  module: dagster._core.storage.event_log\n"
            "  class: ConsolidatedSqliteEventLogStorage\n"
            f"  config:\n    base_dir: {home / 'history'}\n"
        )
    (home / "dagster.yaml").write_text(config)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def seeds_landing(seeds: list[dg.AssetKey], tick: int) -> list[dg.AssetKey]:
    """The seeds new data lands on before `tick`: a twentieth of them, the same for a tick."""
    return random.Random(tick).sample(seeds, k=max(1, len(seeds) // 20))


def _landing_data(assets: list[dg.AssetKey], ticks: int) -> list[list[dg.AssetKey]]:
    """The seeds updated before each tick: none before the first (it has no cursor yet)."""
    seeds = [key for key in assets if key.path[-1].startswith("seed_")]
    return [[]] + [seeds_landing(seeds, tick) for tick in range(ticks)]


def report_materialized(instance: dg.DagsterInstance, keys) -> None:
    for key in keys:
        instance.report_runless_asset_event(dg.AssetMaterialization(key))


def everything_built(
    home: Path, assets: list[dg.AssetKey], sources: Sequence[dg.AssetKey] = ()
) -> Path:
    """An instance in which every asset has been materialized once, and every observed source
    observed with data: each side gets a copy."""
    with instance_in(home) as instance:
        report_materialized(instance, assets)
        for key in sources:
            instance.report_runless_asset_event(
                dg.AssetObservation(key, tags={DATA_VERSION_TAG: "first"})
            )
    return home


class _OnACopy:
    """Work on a copy of a template instance, opened for the length of a `with` block."""

    def __init__(self, template: Path, home: Path):
        shutil.copytree(template, home)
        self.home = home

    def __enter__(self):
        self._instance_cm = instance_in(self.home)
        self.instance = self._instance_cm.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        self._instance_cm.__exit__(*exc_info)


# --- automation tick --------------------------------------------------------------------------


class EagerDbtComponent(DbtProjectComponent):
    """The stock component with Dagster's `eager()` on every asset: the usual starting point."""

    def get_asset_spec(self, manifest, unique_id, project) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        return spec.replace_attributes(automation_condition=dg.AutomationCondition.eager())


class EveryTickDbtComponent(CustomDbtComponent):
    """Our component with each policy evaluated on every tick (as before
    `internals/what_changed.py`): the same requests, for the plot's middle line."""

    def policy_for(self, node, materialized: str) -> dg.AutomationCondition:
        return evaluated_every_tick(super().policy_for(node, materialized))


# Unmeasured ticks before each measured series: the first tick has no cursor, and a policy is
# carried forward only from the tick after an evaluation that found it at a fixed point.
SETTLING_TICKS = 3
TICK_SIDES = {
    "ours": CustomDbtComponent,
    "every tick": EveryTickDbtComponent,
    "eager": EagerDbtComponent,
}


def automation_ticks(project_dir: Path, models: int, repeat: int) -> list[Comparison]:
    """Steady-state sensor ticks of one graph, busy and quiet, three sides, each as it is
    deployed: our policies (evaluated only when something they read changed, through the
    component's sensors, which skip a tick on which nothing happened), the same policies
    evaluated on every tick (through the same sensors), and `eager()` on every asset (Dagster's
    default sensor: one evaluation of every asset).

    All start from the same instance in which every asset has been materialized once. A few
    unmeasured ticks settle each side (the first has no cursor: it records where every
    condition starts and requests nothing). Then `repeat` busy ticks, each after a twentieth
    of the seeds were reported materialized, as new data landing would be (the same seeds on
    every side); a few unmeasured quiet ticks; then `repeat` quiet ticks, nothing having
    happened since the previous one. Our two sides must request the same on every tick.
    """
    project = DbtProject(project_dir=project_dir, profiles_dir=project_dir)
    defs = {
        side: component_defs(component=component_cls(project=project))
        for side, component_cls in TICK_SIDES.items()
    }
    graph = defs["ours"].resolve_asset_graph()
    assets = sorted(graph.materializable_asset_keys)
    seeds = [key for key in assets if key.path[-1].startswith("seed_")]
    settle = [[] for _ in range(SETTLING_TICKS)]
    busy = [seeds_landing(seeds, tick) for tick in range(repeat)]
    activity = settle + busy + settle + [[] for _ in range(repeat)]

    with tempfile.TemporaryDirectory(prefix="bench-instance-") as scratch:
        template = everything_built(Path(scratch) / "template", assets)
        series = {
            side: (TickSeries if side == "eager" else SensorTickSeries)(
                side_defs, template, Path(scratch) / side.replace(" ", "_"), activity
            )
            for side, side_defs in defs.items()
        }
        with ExitStack() as opened, long_lived_objects_frozen():
            for each in series.values():
                opened.enter_context(each)
            seconds = {}
            for kind in ("busy", "quiet"):
                for each in series.values():
                    for _ in range(SETTLING_TICKS):
                        each.tick()
                medians = alternate_all([each.tick for each in series.values()], repeat)
                seconds[kind] = dict(zip(series, medians, strict=True))
                seconds[f"{kind}_evaluated"] = statistics.median(series["ours"].evaluated[-repeat:])
                seconds[f"{kind}_skipped"] = sum(series["ours"].skipped[-repeat:])
                for side, each in series.items():
                    requested = each.requested[-repeat:]
                    seconds[f"{kind}_{side}_requested"] = statistics.median(requested)
            series["every tick"].evaluate_once_more()  # untimed: the nodes of every policy
    if series["ours"].requested != series["every tick"].requested:
        raise AssertionError(
            f"our policies requested {series['ours'].requested} evaluated only on change, "
            f"{series['every tick'].requested} on every tick"
        )
    return _tick_comparisons(models, len(assets), seconds, series, graph, len(busy[-1]), repeat)


def _tick_comparisons(models, assets, seconds, series, graph, landed, repeat) -> list:
    per_thousand = 1000 / assets
    ours, every, eager = "ours", "every tick", "eager"
    figures = []
    measures = {"busy": "automation tick", "quiet": "automation tick, nothing changed"}
    for kind, measure in measures.items():
        details = {
            "assets": assets,
            "seeds_updated_per_tick": landed if kind == "busy" else 0,
            "ours_evaluations_stored_median": seconds[f"{kind}_evaluated"],
            "ours_sensor_ticks_skipped": f"{seconds[f'{kind}_skipped']} of "
            f"{repeat * len(series['ours'].sensors)}",
            "every_tick_seconds": seconds[kind][every],
            "every_tick_ratio": seconds[kind][every] / seconds[kind][eager],
            "ours_seconds_per_1000_assets": seconds[kind][ours] * per_thousand,
            "stock_seconds_per_1000_assets": seconds[kind][eager] * per_thousand,
        }
        if kind == "busy":
            details |= {
                "ours_requested_median": seconds[f"busy_{ours}_requested"],
                "stock_requested_median": seconds[f"busy_{eager}_requested"],
                **{f"ours_{k}": n for k, n in series[every].nodes_per_asset(graph).items()},
                **{f"stock_{k}": n for k, n in series[eager].nodes_per_asset(graph).items()},
            }
        sides = (
            (measure, "project policies, evaluated on change", ours, details),
            (f"{measure}, every node on every tick", "project policies, every node every tick",
             every, {}),
        )  # fmt: skip
        figures += [
            Comparison(
                name,
                models,
                label,
                "eager() on every asset",
                seconds[kind][side],
                seconds[kind][eager],
                repeat,
                details=side_details,
            )
            for name, label, side, side_details in sides
        ]
    return figures


class TickSeries(_OnACopy):
    """The automation sensor's evaluations on a copy of the template instance."""

    def __init__(
        self,
        defs: dg.Definitions,
        template: Path,
        home: Path,
        activity: list,
        land: Callable[[dg.DagsterInstance, list], None] = report_materialized,
    ):
        super().__init__(template, home)
        self.defs, self.activity, self.land = defs, activity, land
        self.now, self.cursor, self.requested, self.results = FIRST_TICK, None, [], []
        self.evaluated: list[int] = []  # per tick, the assets not carried forward

    def tick(self) -> float:
        """The next activity lands, then one tick a minute later, timed."""
        self.land(self.instance, self.activity[len(self.requested)])
        self.now += timedelta(minutes=1)
        started = time.perf_counter()
        outcome = with_one_collection(self._evaluate)
        elapsed = time.perf_counter() - started
        self._record(outcome)
        return elapsed

    def _evaluate(self) -> dg.EvaluateAutomationConditionsResult:
        return dg.evaluate_automation_conditions(
            defs=self.defs, instance=self.instance, evaluation_time=self.now, cursor=self.cursor
        )

    def _record(self, result: dg.EvaluateAutomationConditionsResult) -> None:
        self.cursor, self.results = result.cursor, result.results
        self.requested.append(result.total_requested)
        self.evaluated.append(sum(not isinstance(r, CarriedForward) for r in result.results))

    def nodes_per_asset(self, graph) -> dict[str, float]:
        """Condition nodes the last tick evaluated, per view and per other asset (mean)."""
        counts: dict[str, list[int]] = {"nodes_per_view": [], "nodes_per_table": []}
        for result in self.results:
            is_view = graph.get(result.key).tags.get(MATERIALIZATION_TAG) == "view"
            counts["nodes_per_view" if is_view else "nodes_per_table"].append(_nodes(result))
        return {kind: statistics.mean(nodes) for kind, nodes in counts.items() if nodes}


class SensorTickSeries(TickSeries):
    """A side as the daemon evaluates it: each of the component's automation sensors (one per
    500 assets) in turn, on its own cursor, as the code server runs it (with the speedups a
    tick on which nothing happened is skipped, `internals/quiet_ticks.py`). `eager()` is
    evaluated as Dagster's default sensor does it: every asset in one evaluation."""

    def __init__(self, defs: dg.Definitions, template: Path, home: Path, activity: list):
        super().__init__(defs, template, home, activity)
        self.repository = defs.get_repository_def()
        self.sensors = [
            sensor
            for sensor in self.repository.sensor_defs
            if isinstance(sensor, dg.AutomationConditionSensorDefinition)
        ]
        self.cursors: dict[str, str | None] = dict.fromkeys(s.name for s in self.sensors)
        self.skipped: list[int] = []  # per tick, the sensors that skipped it

    def _record(self, ticks: list) -> None:
        graph = self.repository.asset_graph
        self.requested.append(
            sum(
                graph.get(key).automation_condition is not None
                for data in ticks
                for request in data.run_requests or []
                for key in [*(request.asset_selection or []), *(request.asset_check_keys or [])]
            )
        )
        self.evaluated.append(sum(len(data.automation_condition_evaluations) for data in ticks))
        self.skipped.append(
            sum(data.cursor == before for data, before in zip(ticks, self._before, strict=True))
        )

    def evaluate_once_more(self) -> None:
        """Every asset evaluated once more, in one evaluation, untimed and without a cursor:
        the results whose nodes `nodes_per_asset` counts (a sensor's tick returns none)."""
        self.results = dg.evaluate_automation_conditions(
            defs=self.defs, instance=self.instance, evaluation_time=self.now
        ).results

    def _evaluate(self) -> list:
        """Every sensor's tick, in turn (each returns its cursor, requests and evaluations)."""
        self._before, ticks = list(self.cursors.values()), []
        with SimulatedClock().at(self.now):
            for sensor in self.sensors:
                context = dg.build_sensor_context(
                    instance=self.instance,
                    cursor=self.cursors[sensor.name],
                    repository_def=self.repository,
                )
                ticks.append(sensor.evaluate_tick(context))
                self.cursors[sensor.name] = ticks[-1].cursor
        return ticks


def _nodes(result: dg.AutomationResult) -> int:
    return 1 + sum(_nodes(child) for child in result.child_results)


# --- splitting the automation sensor ----------------------------------------------------------

SENSOR_INTERVAL_SECONDS = 30  # the shipped defs.yaml's minimum_interval_seconds
DAEMON_THREADS = 4  # as `sensors: {use_threads: true, num_workers: 4}` in dagster.yaml
SENSOR_LAYOUTS = {
    "one sensor": AutomationSensorArgs(max_assets_per_sensor=10**9),
    "at most 500 assets per sensor (default)": AutomationSensorArgs(),
    "by folder, at most 500 per sensor": AutomationSensorArgs(split_by_folder=True),
}


def splitting(project_dir: Path, models: int, repeat: int) -> list[Comparison]:
    """The project's assets over several automation sensors, against one sensor for them all.

    Each sensor is evaluated on its own cursor, as the daemon does, over the same instance and
    the same landing data as the automation tick measure. A round evaluates every sensor once:
    one after another (the daemon's default), or `DAEMON_THREADS` at a time (its thread
    settings). Sensors of Python conditions run in the code server, one process, as the
    threads here share one. An asset is evaluated once per round, so the time between two of
    its evaluations is the longer of the sensor's interval and the round.
    """
    project = DbtProject(project_dir=project_dir, profiles_dir=project_dir)
    defs_by_layout = {
        layout: component_defs(component=_UnlimitedSensors(project=project, automation_sensor=args))
        for layout, args in SENSOR_LAYOUTS.items()
    }
    graph = defs_by_layout["one sensor"].resolve_asset_graph()
    assets = sorted(graph.materializable_asset_keys)
    activity = _landing_data(assets, ticks=2 * repeat)  # serial and threaded rounds alternate
    figures = []
    with tempfile.TemporaryDirectory(prefix="bench-instance-") as scratch:
        template = everything_built(Path(scratch) / "template", assets)
        for number, (layout, defs) in enumerate(defs_by_layout.items()):
            rounds = _SensorRounds(defs, template, Path(scratch) / str(number), activity)
            with rounds as sensors, long_lived_objects_frozen():
                sensors.serial_round()  # each sensor's first tick: no cursor yet
                serial, threaded = alternate(sensors.serial_round, sensors.threaded_round, repeat)
                figures.append((layout, len(defs.sensors), serial, threaded, sensors))
    one_sensor_seconds = figures[0][2]
    return [
        Comparison(
            f"automation, {layout}",
            models,
            f"{count} sensor{'s' if count > 1 else ''}, round one after another",
            "one sensor",
            serial,
            one_sensor_seconds,
            repeat,
            details={
                "sensors": count,
                "threaded_round_seconds": threaded,
                "threaded_to_serial_ratio": threaded / serial,
                "slowest_sensor_tick_seconds": sensors.slowest_tick(),
                "seconds_between_evaluations_of_an_asset": max(SENSOR_INTERVAL_SECONDS, serial),
                "evaluations_per_asset_per_round": sensors.evaluations_per_asset(assets),
            },
        )
        for layout, count, serial, threaded, sensors in figures
    ]


class _UnlimitedSensors(CustomDbtComponent):
    """The component, with a sensor of any size allowed (to measure one sensor for all)."""

    def __post_init__(self) -> None:
        pass


class _SensorRounds(_OnACopy):
    """Every automation sensor of `defs`, each on its own cursor, over one instance copy."""

    def __init__(self, defs: dg.Definitions, template: Path, home: Path, activity: list):
        super().__init__(template, home)
        self.defs, self.activity = defs, activity
        self.now, self.rounds = FIRST_TICK, 0
        self.cursors = {sensor.name: None for sensor in defs.sensors}
        self.ticks: dict[str, list[float]] = {sensor.name: [] for sensor in defs.sensors}
        self.evaluated: list[dg.AssetKey] = []

    def serial_round(self) -> float:
        self._land()
        return timed(
            lambda: with_one_collection(lambda: [self._tick(s) for s in self.defs.sensors])
        )

    def threaded_round(self) -> float:
        self._land()
        with ThreadPoolExecutor(max_workers=DAEMON_THREADS) as pool:
            return timed(
                lambda: with_one_collection(lambda: list(pool.map(self._tick, self.defs.sensors)))
            )

    def _land(self) -> None:
        report_materialized(self.instance, self.activity[self.rounds])
        self.rounds += 1
        self.now += timedelta(minutes=1)

    def _tick(self, sensor: dg.AutomationConditionSensorDefinition) -> None:
        started = time.perf_counter()
        result = dg.evaluate_automation_conditions(
            defs=self.defs,
            instance=self.instance,
            asset_selection=sensor.asset_selection,
            evaluation_time=self.now,
            cursor=self.cursors[sensor.name],
        )
        self.ticks[sensor.name].append(time.perf_counter() - started)
        self.cursors[sensor.name] = result.cursor
        if self.rounds == 1:
            self.evaluated.extend(r.key for r in result.results)

    def slowest_tick(self) -> float:
        return max(statistics.median(ticks[1:]) for ticks in self.ticks.values())

    def evaluations_per_asset(self, assets: list[dg.AssetKey]) -> float:
        return len(self.evaluated) / len(assets)


# --- the dev loop -----------------------------------------------------------------------------


def dev_loop(dbt_project: Path, models: int, repeat: int) -> Comparison:
    """`dg check defs` after an SQL edit, against `dbt parse` alone after the same kind of edit."""
    with tempfile.TemporaryDirectory(prefix="bench-dg-project-") as scratch:
        project = copy_dagster_project(
            REPO_ROOT, Path(scratch), dbt_project=dbt_project, keep_manifest=True
        )
        env = project_env(project)
        dbt_dir = project / "analytics_dbt"
        sql_files = sorted(dbt_dir.glob("models/**/*.sql"))
        edits = itertools.count()

        def edit() -> None:
            path = sql_files[next(edits) % len(sql_files)]
            path.write_text(path.read_text() + "{% set edited = true %}\n")  # logic, not a comment

        def check_defs() -> float:
            edit()
            return timed(lambda: _run(["dg", "check", "defs"], project, env))

        def dbt_parse() -> float:
            edit()
            command = ["dbt", "parse", "--project-dir", dbt_dir, "--profiles-dir", dbt_dir]
            return timed(lambda: _run(command, dbt_dir, env))

        check_defs()  # the first load parses from scratch; an edit loop starts warm
        ours, stock = alternate(check_defs, dbt_parse, repeat)
    return Comparison(
        "dev loop after an SQL edit", models, "dg check defs", "dbt parse", ours, stock, repeat
    )


def _run(command: list, cwd: Path, env: dict[str, str]) -> None:
    finished = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"{command} failed in {cwd}:\n{finished.stdout}{finished.stderr}")


# --- orchestration ----------------------------------------------------------------------------


def orchestration(repeat: int) -> Comparison:
    """All eight demo assets materialized through Dagster in process, against `dbt build`.

    Each repetition starts on a new DuckDB file, so both sides build everything from scratch.
    Our side uses the shipped component's settings (metadata included), as `dg dev` runs it.
    """
    with tempfile.TemporaryDirectory(prefix="bench-orchestration-") as scratch:
        # One file for both sides, named as the manifest's (dagster-dbt reads row counts through
        # the relation names dbt wrote at parse time) and set before the parse: the path is part
        # of dbt's profile, and a changed profile makes every run parse the project again.
        warehouse = Path(scratch) / "warehouse" / "analytics.duckdb"
        project_dir = Path(scratch) / "analytics_dbt"
        landing = project_dir / "landing"  # the copy's first batch
        with environment(DBT_DUCKDB_PATH=str(warehouse), DBT_LANDING_ZONE=str(landing)):
            copy_dbt_project(DEMO_DBT_PROJECT, project_dir)
            parse(project_dir)
            # The first run in this process imports dbt's adapter (several seconds) and the
            # first `dbt build` warms the file cache: neither is what a repeated run costs.
            _through_dagster(project_dir, warehouse), _dbt_build(project_dir, warehouse)
            ours, stock = alternate(
                lambda: _through_dagster(project_dir, warehouse),
                lambda: _dbt_build(project_dir, warehouse),
                repeat,
            )
    return Comparison(
        "materialize the demo (8 assets, 28 tests)",
        None,
        "Dagster, in process",
        "dbt build",
        ours,
        stock,
        repeat,
    )


def _through_dagster(project_dir: Path, warehouse: Path) -> float:
    project = DbtProject(project_dir=project_dir, profiles_dir=project_dir)
    defs = component_defs(
        component=CustomDbtComponent(project=project, **_shipped_dbt_attributes())
    )
    # What dbt build builds: the source's observation is not part of it.
    built = [assets for assets in defs.assets if assets.is_materializable]
    _remove_database(warehouse)
    with dg.instance_for_test() as instance:
        seconds = timed(lambda: dg.materialize(built, instance=instance, run_config=QUIET_RUN))
    release_duckdb_file()
    return seconds


def _dbt_build(project_dir: Path, warehouse: Path) -> float:
    _remove_database(warehouse)
    command = ["dbt", "build", "--project-dir", project_dir, "--profiles-dir", project_dir]
    return timed(lambda: _run(command, project_dir, dict(os.environ)))


def _remove_database(path: Path) -> None:
    path.parent.mkdir(exist_ok=True)
    for leftover in (path, path.with_name(f"{path.name}.wal")):
        leftover.unlink(missing_ok=True)


def _shipped_dbt_attributes() -> dict:
    """The attributes of the shipped defs.yaml that change what a run does."""
    dbt_document = next(yaml.safe_load_all(DEMO_DEFS_YAML.read_text()))
    attributes = dbt_document["attributes"]
    return {"include_metadata": attributes["include_metadata"]}


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """These environment variables set for the length of a `with` block, then restored."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
