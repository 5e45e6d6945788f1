"""Replaying automation on a simulated clock: real dbt runs, a real instance, explicit ticks.

Used by `nox -s demo` and by the tests, so both show the same behaviour the same way.
"""

import os
import shutil
import subprocess
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import yaml
from dagster.components.testing.utils import component_defs
from dagster_dbt import DbtProject
from dagster_dbt.dbt_manifest import read_manifest_path

from dbt_automation_demo.components.custom_dbt_component import (
    CustomDbtComponent,
    speedups_in_environment,
)
from dbt_automation_demo.internals.dagster_names import (
    InProcessCodeLocationOrigin,
    LoadableTargetOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dbt_automation_demo.internals.dbt_cli import parse_in_this_process
from dbt_automation_demo.internals.what_changed import CarriedForward

DBT_DEFS_YAML = Path("src/dbt_automation_demo/defs/analytics/defs.yaml")
CRON_ATTRIBUTES = ("daily_cron", "cron_timezone", "cron_by_tag", "cron_by_path")
RUN_ARTIFACTS = ("target", "logs", "dbt_packages", "*.duckdb", "*.wal", ".user.yml")
LANDED_BATCHES = "batch_*.csv"  # what `nox -s land` dropped in the checkout's landing zone
THIS_CODE_LOCATION = RemoteRepositoryOrigin(
    InProcessCodeLocationOrigin(LoadableTargetOrigin(python_file=__file__)), "__repository__"
)


def copy_dbt_project(source: Path, destination: Path, keep_manifest: bool = False) -> Path:
    """Copy a dbt project without its run artifacts (optionally keeping target/manifest.json)
    and without the batches landed since the clone: a copy starts from the shipped first batch."""
    skipped = [pattern for pattern in RUN_ARTIFACTS if not (keep_manifest and pattern == "target")]
    skipped.append(LANDED_BATCHES)
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns(*skipped))
    return destination


def copy_dagster_project(
    project_root: Path,
    destination: Path,
    dbt_project: Path | None = None,
    keep_manifest: bool = False,
) -> Path:
    """The whole project (code, dbt project, instance config) in a folder of its own, optionally
    around another dbt project.

    Commands run there with `project_env()`, so Python imports this copy's code, not the
    checkout's, and the copy can be edited freely.
    """
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copy(project_root / "pyproject.toml", destination)
    shutil.copytree(
        project_root / "src",
        destination / "src",
        ignore=shutil.ignore_patterns(".local_defs_state", "__pycache__"),
    )
    copy_dbt_project(
        dbt_project or project_root / "analytics_dbt",
        destination / "analytics_dbt",
        keep_manifest=keep_manifest,
    )
    (destination / "dagster_home").mkdir()
    shutil.copy(project_root / "dagster_home" / "dagster.yaml", destination / "dagster_home")
    return destination


def project_env(project: Path, **extra: str) -> dict[str, str]:
    """The environment for commands run in a `copy_dagster_project()` copy."""
    return {
        **os.environ,
        "PYTHONPATH": str(project / "src"),
        "DAGSTER_HOME": str(project / "dagster_home"),
        "DBT_DUCKDB_PATH": str(project / "warehouse" / "analytics.duckdb"),
        "DBT_LANDING_ZONE": str(project / "analytics_dbt" / "landing"),
        **extra,
    }


def parse(project_dir: Path) -> None:
    """`dbt parse`, as `nox -s manifest` does: writes target/manifest.json. With the speedups
    (DBT_AUTOMATION_SPEEDUPS unset or true), in this process, as the component's state refresh
    parses; without, in a new `dbt` process, as stock dagster-dbt does."""
    if speedups_in_environment():
        # Its files where a `dbt parse` started in the project writes them.
        target, logs = project_dir / "target", project_dir / "logs"
        parse_in_this_process(("parse", "--quiet"), project_dir, project_dir, target, logs)
        return
    parsed = subprocess.run(
        ["dbt", "parse", "--project-dir", project_dir, "--profiles-dir", project_dir],
        cwd=project_dir,  # dbt reads the working directory even when given --project-dir
        capture_output=True,
        text=True,
    )
    if parsed.returncode != 0:
        raise RuntimeError(f"dbt parse failed in {project_dir}:\n{parsed.stdout}{parsed.stderr}")


def build_defs(
    project_dir: Path, component_cls: type[CustomDbtComponent] = CustomDbtComponent, **attributes
) -> dg.Definitions:
    """The component's definitions from the project's existing manifest; with `speedups` as
    the shipped defs.yaml sets it (from DBT_AUTOMATION_SPEEDUPS) unless given."""
    project = DbtProject(project_dir=project_dir, profiles_dir=project_dir)
    attributes.setdefault("speedups", speedups_in_environment())
    return component_defs(component=component_cls(project=project, **attributes))


def reload_defs(project_dir: Path, **build_args) -> dg.Definitions:
    """Rebuild the manifest and the definitions after an edit, as a fresh process would."""
    reparse(project_dir)
    return build_defs(project_dir, **build_args)


def reparse(project_dir: Path) -> None:
    """`dbt parse` after an edit. dagster-dbt caches each parsed manifest by path for the life
    of the process; clearing it is what makes the edit visible to a reload in the same process.
    """
    parse(project_dir)
    read_manifest_path.cache_clear()


def defs_from_yaml(project_root: Path) -> dg.Definitions:
    """The dbt component's definitions over the project's manifest, with the crons its
    `defs.yaml` sets (the first document's `daily_cron`, `cron_timezone`, `cron_by_tag` and
    `cron_by_path`), as after `dg dev` reloads an edited `defs.yaml`.
    """
    attributes = next(yaml.safe_load_all((project_root / DBT_DEFS_YAML).read_text()))["attributes"]
    crons = {name: attributes[name] for name in CRON_ATTRIBUTES if name in attributes}
    return build_defs(project_root / "analytics_dbt", **crons)


def keys(*names: str) -> set[dg.AssetKey]:
    """The asset keys of names as the UI writes them (`landing/payments`), as `names()` gives."""
    return {dg.AssetKey.from_user_string(name) for name in names}


def names(asset_keys: Iterable[dg.AssetKey]) -> set[str]:
    return {key.to_user_string() for key in asset_keys}


class Ticker:
    """The automation sensor's evaluations, one per `tick()`, on a simulated clock."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance, now: datetime):
        self.defs = defs
        self.instance = instance
        self.now = now
        self.cursor = None
        self.last_evaluation: dg.EvaluateAutomationConditionsResult | None = None
        # Each asset's latest evaluation that was not carried forward: what the UI shows.
        self.evaluated: dict[dg.AssetKey | dg.AssetCheckKey, dg.AutomationResult] = {}

    def tick(self, after: timedelta = timedelta(minutes=1)) -> set[str]:
        """Advance the clock, evaluate once, and return the names of the requested assets."""
        self.now += after
        result = dg.evaluate_automation_conditions(
            defs=self.defs, instance=self.instance, evaluation_time=self.now, cursor=self.cursor
        )
        self.cursor = result.cursor
        self.last_evaluation = result
        self.evaluated |= {r.key: r for r in result.results if not isinstance(r, CarriedForward)}
        graph = self.defs.resolve_asset_graph()
        return {
            key.to_user_string()
            for key in graph.materializable_asset_keys
            if result.get_num_requested(key)
        }

    def tick_at(self, when: datetime) -> set[str]:
        return self.tick(after=when - self.now)


def materialize(
    defs: dg.Definitions, instance: dg.DagsterInstance, asset_names: Iterable[str], **kwargs
) -> dg.ExecuteInProcessResult:
    """A real dbt run of the named assets, recorded in the instance as a launched run is.

    A launched run records its asset selection, from which `any_deps_updated()` learns that a
    parent was built by a run that also built the child; `dg.materialize` records none.
    """
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=instance, asset_selection=list(keys(*asset_names)), **kwargs
    )


def record_run(
    instance: dg.DagsterInstance,
    job: dg.JobDefinition,
    status: dg.DagsterRunStatus,
    asset_names: Iterable[str] | None = None,
) -> dg.DagsterRun:
    """A run of the job (or of the named assets) that the instance records with this status,
    standing for a run someone else started and that has not finished.

    Creating it plans its materializations, which is what Dagster's `in_progress()` reads.
    """
    selection = frozenset(keys(*asset_names)) if asset_names is not None else None
    return instance.create_run_for_job(
        job_def=job.get_subset(asset_selection=selection) if selection else job,
        asset_selection=selection,
        status=status,
        # Queued runs must say where their code lives, so the run coordinator can launch them.
        remote_job_origin=RemoteJobOrigin(THIS_CODE_LOCATION, job.name),
    )


def start_run(
    defs: dg.Definitions, instance: dg.DagsterInstance, asset_names: Iterable[str]
) -> dg.DagsterRun:
    """A run of the named assets that the instance records as started and not yet finished."""
    job = defs.resolve_implicit_global_asset_job_def()
    return record_run(instance, job, dg.DagsterRunStatus.STARTED, asset_names)


def end_run(instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    instance.report_run_canceled(run)
