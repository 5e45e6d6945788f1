"""What observing dbt sources costs: one observation of every source, and the automation tick
after new data landed on some of them, on a project that starts from `sources` warehouse
tables (`synthetic.generate_sources_project`).

The size of these figures is a number of sources, not of models.
"""

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
    EagerDbtComponent,
    TickSeries,
    alternate,
    environment,
    everything_built,
    long_lived_objects_frozen,
    report_new_data,
    seeds_landing,
    timed,
)
from bench.synthetic import generate_sources_project, load_raw_tables
from dbt_automation_demo.components.custom_dbt_component import CustomDbtComponent
from dbt_automation_demo.components.source_observations import observation_job_name
from dbt_automation_demo.internals.duckdb_file import release_duckdb_file
from dbt_automation_demo.replay import parse

SIZE_UNIT = "sources"
SOURCE_MEASURES = ("observe every source", "automation tick after new source data")


def source_figures(scratch: Path, sources: int, repeat: int, seed: int) -> list[Comparison]:
    """Both figures at `sources` sources, on one generated project and its DuckDB file."""
    project_dir = scratch / f"sources_{sources}"
    warehouse = scratch / f"sources_{sources}.duckdb"
    tables = generate_sources_project(project_dir, sources, seed=seed)
    with environment(DBT_DUCKDB_PATH=str(warehouse)):
        load_raw_tables(warehouse, tables)
        parse(project_dir)
        project = DbtProject(project_dir=project_dir, profiles_dir=project_dir)
        return [
            observation(project, sources, repeat),
            tick_after_new_data(project, sources, repeat),
        ]


def observation(project: DbtProject, sources: int, repeat: int) -> Comparison:
    """The component's observation job, run in process (`dbt source freshness`, then an
    observation and its checks per source, stored), against `dbt source freshness` alone."""
    defs = component_defs(component=CustomDbtComponent(project=project))
    job = defs.resolve_job_def(observation_job_name(project.name))

    def ours() -> float:
        with dg.instance_for_test() as instance:
            seconds = timed(lambda: _observe_every_source(job, instance, sources))
        release_duckdb_file()
        return seconds

    def stock() -> float:
        command = ["dbt", "source", "freshness", "--project-dir", project.project_dir,
                   "--profiles-dir", project.profiles_dir]  # fmt: skip
        return timed(lambda: subprocess.run(command, check=True, capture_output=True))

    ours(), stock()  # the first of each imports dbt's adapter and warms the file cache
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
        },
        size_unit=SIZE_UNIT,
    )


def _observe_every_source(job: dg.JobDefinition, instance: dg.DagsterInstance, sources: int):
    result = job.execute_in_process(instance=instance, run_config=QUIET_RUN)
    observed = len(result.get_asset_observation_events())
    if observed != sources:  # a figure of sources with no data would measure less work
        raise RuntimeError(f"the observation saw data in {observed} of {sources} sources")


def tick_after_new_data(project: DbtProject, sources: int, repeat: int) -> Comparison:
    """The automation tick after new data landed on a twentieth of the sources: our policies
    against `eager()` on every asset, both from an instance in which every model was built and
    every source observed once. New data is an observation with a new data version, as the
    observation job records it."""
    ours_defs = component_defs(component=CustomDbtComponent(project=project))
    eager_defs = component_defs(component=EagerDbtComponent(project=project))
    graph = ours_defs.resolve_asset_graph()
    assets = sorted(graph.materializable_asset_keys)
    source_keys = sorted(graph.observable_asset_keys)
    activity = [[]] + [seeds_landing(source_keys, tick) for tick in range(repeat)]

    with tempfile.TemporaryDirectory(prefix="bench-instance-") as scratch:
        template = everything_built(Path(scratch) / "template", assets, source_keys)
        ours = TickSeries(ours_defs, template, Path(scratch) / "ours", activity, report_new_data)
        eager = TickSeries(eager_defs, template, Path(scratch) / "eager", activity, report_new_data)
        with ours, eager, long_lived_objects_frozen():
            ours.tick(), eager.tick()
            ours_seconds, eager_seconds = alternate(ours.tick, eager.tick, repeat)
    requested = statistics.median(ours.requested[1:])
    if requested != len(activity[-1]):  # each landed source requests its one view, once
        raise RuntimeError(f"new data on {len(activity[-1])} sources requested {requested}")
    return Comparison(
        "automation tick after new source data",
        sources,
        "project policies",
        "eager() on every asset",
        ours_seconds,
        eager_seconds,
        repeat,
        details={
            "assets": len(assets) + len(source_keys),
            "sources_with_new_data_per_tick": len(activity[-1]),
            "ours_requested_median": requested,
            "stock_requested_median": statistics.median(eager.requested[1:]),
            "ours_ms_per_source": 1000 * ours_seconds / sources,
        },
        size_unit=SIZE_UNIT,
    )
