"""Real parts for tests: a copied dbt project, its parsed manifest, Dagster defs, ticks and runs."""

import shutil
import subprocess
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
from dagster.components.testing.utils import component_defs
from dagster_dbt import DbtProject
from dagster_dbt.dbt_manifest import read_manifest_path

from dbt_automation_demo.defs.analytics.component import CustomDbtComponent

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_DBT_PROJECT = REPO_ROOT / "analytics_dbt"
RUN_ARTIFACTS = ("logs", "dbt_packages", "*.duckdb", "*.wal")


def copy_dbt_project(destination: Path, source: Path = SHIPPED_DBT_PROJECT) -> Path:
    """Copy a dbt project without its run artifacts; a parsed copy keeps its target/ manifest."""
    skipped = RUN_ARTIFACTS if source != SHIPPED_DBT_PROJECT else (*RUN_ARTIFACTS, "target")
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns(*skipped))
    return destination


def parse(project_dir: Path) -> None:
    """`dbt parse`, as `nox -s manifest` does: writes target/manifest.json."""
    subprocess.run(
        ["dbt", "parse", "--quiet", "--project-dir", project_dir, "--profiles-dir", project_dir],
        check=True,
    )


def build_defs(
    project_dir: Path, component_cls: type[CustomDbtComponent] = CustomDbtComponent, **attributes
) -> dg.Definitions:
    """The component's definitions from the project's existing manifest."""
    project = DbtProject(project_dir=project_dir, profiles_dir=project_dir)
    return component_defs(component=component_cls(project=project, **attributes))


def reload_defs(project_dir: Path, **build_args) -> dg.Definitions:
    """Rebuild the manifest and the definitions after an edit, as a fresh process would.

    dagster-dbt caches each parsed manifest by path for the life of the process; clearing it
    is what makes an edited SQL file visible to a reload in the same test process.
    """
    parse(project_dir)
    read_manifest_path.cache_clear()
    return build_defs(project_dir, **build_args)


def keys(*names: str) -> set[dg.AssetKey]:
    return {dg.AssetKey(name) for name in names}


def names(asset_keys: Iterable[dg.AssetKey]) -> set[str]:
    return {key.to_user_string() for key in asset_keys}


class Ticker:
    """The automation sensor's evaluations, one per `tick()`, on a simulated clock."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance, now: datetime):
        self.defs = defs
        self.instance = instance
        self.now = now
        self.cursor = None

    def tick(self, after: timedelta = timedelta(minutes=1)) -> set[str]:
        """Advance the clock, evaluate once, and return the names of the requested assets."""
        self.now += after
        result = dg.evaluate_automation_conditions(
            defs=self.defs, instance=self.instance, evaluation_time=self.now, cursor=self.cursor
        )
        self.cursor = result.cursor
        return {
            key.to_user_string()
            for key in self.defs.resolve_asset_graph().get_all_asset_keys()
            if result.get_num_requested(key)
        }

    def tick_at(self, when: datetime) -> set[str]:
        return self.tick(after=when - self.now)


def materialize(
    defs: dg.Definitions, instance: dg.DagsterInstance, asset_names: Iterable[str], **kwargs
) -> dg.ExecuteInProcessResult:
    """A real dbt run of the named assets, recorded in the instance."""
    return dg.materialize(
        defs.assets, instance=instance, selection=list(keys(*asset_names)), **kwargs
    )


def start_run(
    defs: dg.Definitions, instance: dg.DagsterInstance, asset_names: Iterable[str]
) -> dg.DagsterRun:
    """A run of the named assets that the instance records as started and not yet finished."""
    job = defs.resolve_implicit_global_asset_job_def()
    return instance.create_run_for_job(
        job_def=job.get_subset(asset_selection=keys(*asset_names)),
        asset_selection=frozenset(keys(*asset_names)),
        status=dg.DagsterRunStatus.STARTED,
    )


def end_run(instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    instance.report_run_canceled(run)


SEEDS = {"raw_customers", "raw_orders"}
VIEWS = {"stg_customers", "stg_orders"}
TABLES = {"customer_orders", "customer_segments", "order_summary"}
ALL_ASSETS = SEEDS | VIEWS | TABLES


def sql_file(project_dir: Path, model: str) -> Path:
    return next(project_dir.glob(f"models/**/{model}.sql"))


def edit_sql(project_dir: Path, model: str, new_sql: str) -> None:
    sql_file(project_dir, model).write_text(new_sql)


def add_comment(project_dir: Path, model: str) -> None:
    """The smallest SQL edit: a comment changes the file's checksum, so its code version."""
    path = sql_file(project_dir, model)
    path.write_text(path.read_text() + "-- edited by a test\n")
