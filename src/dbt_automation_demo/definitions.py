"""Dagster entry point: every component under defs/, checked as a whole before it is served."""

from pathlib import Path

import dagster as dg

from dbt_automation_demo.components.safe_scheduled_job_component import (
    SafeScheduledJobComponent,
)


@dg.definitions
def defs() -> dg.Definitions:
    tree = dg.ComponentTree.for_project(Path(__file__))
    loaded = tree.build_defs()
    # A schedule's selection can name assets of any component, so it is checked once all exist.
    for schedule in tree.get_all_components(of_type=SafeScheduledJobComponent):
        schedule.check_against(loaded)
    # A run executes its steps in its own process, one after another. Dagster's default starts a
    # Python process per step, which imports Dagster, dbt and these definitions again (about 4
    # CPU seconds a run here, docs/ci-time.md), and runs steps that do not depend on each other
    # at once, where DuckDB takes one writer (docs/faults.md).
    return dg.Definitions.merge(loaded, dg.Definitions(executor=dg.in_process_executor))
