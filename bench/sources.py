"""What observing dbt sources costs: one observation of every source, and the automation tick
after new data landed on some of them, on a project that starts from `sources` warehouse
tables (`synthetic.generate_sources_project`).

The size of these figures is a number of sources, not of models.
"""

import itertools
import statistics
import subprocess
import tempfile
from pathlib import Path

import dagster as dg
from dagster.components.testing.utils import component_defs
from dagster_dbt import DbtProject

from bench.measure import (
    QUIET_RUN,
    Comparison,
    TickSeries,
    alternate,
    environment,
    everything_built,
    long_lived_objects_frozen,
    seeds_landing,
    timed,
)
from bench.synthetic import generate_sources_project, load_raw_tables
from dbt_automation_demo.components.custom_dbt_component import CustomDbtComponent
from dbt_automation_demo.components.source_observations import (
    HAS_DATA_CHECK,
    observation_job_name,
)
from dbt_automation_demo.internals.dagster_names import DATA_VERSION_TAG
from dbt_automation_demo.internals.duckdb_file import release_duckdb_file
from dbt_automation_demo.replay import parse

SIZE_UNIT = "sources"
TICK_MEASURES = (
    "automation tick after observing every source",
    "automation tick, no observation since",
)
SOURCE_MEASURES = ("observe every source", *TICK_MEASURES)


def source_figures(scratch: Path, sources: int, repeat: int, seed: int) -> list[Comparison]:
    """Both figures at `sources` sources, on one generated project and its DuckDB file."""
    project_dir = scratch / f"sources_{sources}"
    warehouse = scratch / f"sources_{sources}.duckdb"
    tables = generate_sources_project(project_dir, sources, seed=seed)
    with environment(DBT_DUCKDB_PATH=str(warehouse)):
        load_raw_tables(warehouse, tables)
        parse(project_dir)
        project = DbtProject(project_dir=project_dir, profiles_dir=project_dir)
        return [observation(project, sources, repeat), *ticks(project, sources, repeat)]


def observation(project: DbtProject, sources: int, repeat: int) -> Comparison:
    """The component's observation job, run in process (`dbt source freshness`, then each
    source's checks stored, and an observation where the data version is new), against
    `dbt source freshness` alone. Measured: observations that find the data they found before,
    as most do; the first observation, which records every source, is timed once, apart."""
    defs = component_defs(component=CustomDbtComponent(project=project))
    job = defs.resolve_job_def(observation_job_name(project.name))

    def stock() -> float:
        command = ["dbt", "source", "freshness", "--project-dir", project.project_dir,
                   "--profiles-dir", project.profiles_dir]  # fmt: skip
        return timed(lambda: subprocess.run(command, check=True, capture_output=True))

    with dg.instance_for_test() as instance:

        def ours(new_data_on: int = 0) -> float:
            seconds = timed(lambda: _observe(job, instance, sources, new_data_on))
            release_duckdb_file()
            return seconds

        stock()  # imports dbt's adapter and warms the file cache
        first = ours(new_data_on=sources)
        ours_seconds, stock_seconds = alternate(ours, stock, repeat)
    return Comparison(
        "observe every source",
        sources,
        "observation job, in process",
        "dbt source freshness",
        ours_seconds,
        stock_seconds,
        repeat,
        details={
            "ours_ms_per_source": 1000 * ours_seconds / sources,
            "stock_ms_per_source": 1000 * stock_seconds / sources,
            "first_observation_seconds": first,
        },
        size_unit=SIZE_UNIT,
    )


def _observe(job: dg.JobDefinition, instance: dg.DagsterInstance, sources: int, new: int):
    """One run of the observation job, which must see data in every source, and new data in
    `new` of them (a figure of sources with no data would measure less work)."""
    result = job.execute_in_process(instance=instance, run_config=QUIET_RUN)
    with_data = sum(
        check.passed
        for check in result.get_asset_check_evaluations()
        if check.check_name == HAS_DATA_CHECK
    )
    observed = len(result.get_asset_observation_events())
    if (with_data, observed) != (sources, new):
        raise RuntimeError(
            f"of {sources} sources, the observation saw data in {with_data}, new in {observed}"
        )


class EagerOverObservedSources(CustomDbtComponent):
    """Our component, sources observed, with Dagster's `eager()` on every asset in place of
    the policies: `eager()` sees the same observations (the stock component has no source
    events at all, so its views never refresh and its tick has nothing to do for them)."""

    def policy_for(self, node, materialized: str) -> dg.AutomationCondition:
        return dg.AutomationCondition.eager()


def report_new_data(instance: dg.DagsterInstance, landed: list[dg.AssetKey]) -> None:
    """What an observation of every source records when data landed on `landed`: an
    observation of each of those, with a new data version (the others get checks only)."""
    for key in landed:
        version = f"landed-{next(_LANDINGS)}"
        instance.report_runless_asset_event(
            dg.AssetObservation(key, tags={DATA_VERSION_TAG: version})
        )


_LANDINGS = itertools.count(1)


def ticks(project: DbtProject, sources: int, repeat: int) -> list[Comparison]:
    """Our policies against `eager()` on every asset over the same observed sources, both from
    an instance in which every model was built and every source observed once: the tick right
    after an observation of every source, new data on a twentieth of them (the observation
    schedule's tick), and a tick with no observation since (the sensor's other ticks: it runs
    every 30 s, the observations every 5 minutes by default)."""
    ours_defs = component_defs(component=CustomDbtComponent(project=project))
    eager_defs = component_defs(component=EagerOverObservedSources(project=project))
    graph = ours_defs.resolve_asset_graph()
    assets = sorted(graph.materializable_asset_keys)
    source_keys = sorted(graph.observable_asset_keys)
    landings = [seeds_landing(source_keys, tick) for tick in range(repeat)]
    activity = [[]] + landings + [[]] * repeat

    with tempfile.TemporaryDirectory(prefix="bench-instance-") as scratch:
        template = everything_built(Path(scratch) / "template", assets, source_keys)
        ours, eager = (
            TickSeries(defs, template, Path(scratch) / side, activity, report_new_data)
            for defs, side in ((ours_defs, "ours"), (eager_defs, "eager"))
        )  # fmt: skip
        with ours, eager, long_lived_objects_frozen():
            ours.tick(), eager.tick()
            after_observation = alternate(ours.tick, eager.tick, repeat)
            quiet = alternate(ours.tick, eager.tick, repeat)
    landed = len(landings[-1])
    requested = ours.requested[1 : repeat + 1]
    if requested != [landed] * repeat or any(ours.requested[repeat + 1 :]):
        raise RuntimeError(f"new data on {landed} sources per tick requested {ours.requested}")
    details = {
        "assets": len(assets) + len(source_keys),
        "sources_with_new_data_per_tick": landed,
        "ours_requested_median": statistics.median(requested),
        "stock_requested_median": statistics.median(eager.requested[1 : repeat + 1]),
    }
    return [
        Comparison(measure, sources, "project policies", "eager() on every asset, sources observed",
                   *seconds, repeat, details=details, size_unit=SIZE_UNIT)
        for measure, seconds in zip(TICK_MEASURES, (after_observation, quiet), strict=True)
    ]  # fmt: skip
