"""dagster-dbt's dbt processes, skipped where this process already knows the answer.

Workarounds of dagster-dbt's private internals (docs/internals.md lists each, with its guard
test in tests/test_internals_guard.py). With the component's `speedups: false` none of them runs.
"""

import importlib.metadata
import shutil
import sysconfig
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from dagster_dbt import DbtCliResource, DbtProject
from dagster_dbt.dbt_project import DagsterDbtProjectPreparer
from dagster_dbt.dbt_project_manager import DbtProjectArgsManager
from packaging.version import Version

from dbt_automation_demo.internals.blocking_tests import DBT_EXECUTABLE
from dbt_automation_demo.internals.cancellable_dbt import load_no_adapter
from dbt_automation_demo.internals.collector import collector_paused
from dbt_automation_demo.internals.project_snapshot import mirror

# This environment's scripts that run its own dbt-core.
OWN_DBT_SCRIPTS = ("dbt", DBT_EXECUTABLE)


def refresh_state(component, state_path: Path) -> bool:
    """Refresh a `DbtProjectComponent`'s state as dagster-dbt's `write_state_to_path` does,
    with `dbt parse` in this process and the project's copy brought up to date instead of made
    again (`project_snapshot.py`). False, having done nothing, for a project dagster-dbt
    prepares some other way (a `DbtProject` given in Python).

    `dg check defs` and `dg dev` refresh this state after an edit: dagster-dbt's preparer would
    start `dbt --version` (2.5-4 s here), load dbt's adapter and macros here (1.5-2 s), then
    start `dbt parse`, which imports dbt again (1-1.5 s).
    """
    manager = component._project_manager
    if not isinstance(manager, DbtProjectArgsManager):
        return False
    with collector_paused(), dbt_parse_in_this_process():
        # dagster-dbt's `manager.prepare(state_path)`, with its copy brought up to date.
        project = manager.get_project(None)
        project.preparer.prepare(project)
        mirror(
            Path(manager.args.project_dir),
            manager._local_project_dir(state_path),
            runs_write_in=Path(project.target_path),
        )
        state_path.touch()
    return True


def skip_dbt_version_probe(dbt: DbtCliResource) -> None:
    """Give the resource the version of this environment's dbt-core, so it does not ask.

    Before every dbt command dagster-dbt runs `dbt --version` in a new process (about 4 s
    here: it imports dbt) and caches the answer on the resource, but it builds a new resource
    for every run, so every run pays. When the `dbt` it would run is this environment's own,
    the answer is the installed dbt-core's version (uv.lock pins it), known without a process.
    """
    own = {shutil.which(name, path=sysconfig.get_path("scripts")) for name in OWN_DBT_SCRIPTS}
    if shutil.which(dbt.dbt_executable) in own - {None}:
        dbt.__dict__["_cli_version"] = Version(importlib.metadata.version("dbt-core"))


@contextmanager
def dbt_parse_in_this_process() -> Iterator[None]:
    """Inside the block, dagster-dbt's preparer runs `dbt parse` in this process, through dbt's
    own Python entry point (`dbtRunner`), instead of in a new `dbt` process; and any other dbt
    command it runs (`dbt deps`) is handed this environment's dbt version
    (`skip_dbt_version_probe`) and loads no dbt adapter here.

    A new `dbt parse` process imports dbt again (1-1.5 s here) after this one has imported it
    with dagster-dbt, then parses only what changed; before it, dagster-dbt asks `dbt --version`
    in another process and loads dbt's adapter and macros in this one, to fetch metadata of
    models that a parse or `dbt deps` never builds.
    """
    prepare_manifest, cli = DagsterDbtProjectPreparer._prepare_manifest, DbtCliResource.cli

    def cli_without_probes(resource: DbtCliResource, args, *rest, **kwargs):
        skip_dbt_version_probe(resource)
        load_no_adapter(resource)
        return cli(resource, args, *rest, **kwargs)

    DagsterDbtProjectPreparer._prepare_manifest = _parse_in_this_process
    DbtCliResource.cli = cli_without_probes
    try:
        yield
    finally:
        DagsterDbtProjectPreparer._prepare_manifest, DbtCliResource.cli = prepare_manifest, cli


def _parse_in_this_process(preparer: DagsterDbtProjectPreparer, project: DbtProject) -> None:
    """`_prepare_manifest`, with the arguments and settings its `dbt` process gets as options."""
    target_path = project.project_dir.joinpath(project.target_path)
    parse_in_this_process(
        preparer._prepare_project_cli_args,
        project.project_dir,
        project.profiles_dir,
        target_path,
        target_path,
        *(("--profile", project.profile) if project.profile else ()),
        *(("--target", project.target) if project.target else ()),
    )
    preparer._invalidate_seeds_in_partial_parse(project)


def parse_in_this_process(
    command: Sequence[str],
    project_dir: Path,
    profiles_dir: Path,
    target_path: Path,
    log_path: Path,
    *options: str,
) -> None:
    """dbt's `command` (`parse` and its flags) through dbt's own Python entry point, `dbtRunner`,
    in this process, which has imported dbt already: a new `dbt` process would import it again
    (1-1.5 s here) before parsing only what changed."""
    # dbt's commands: imported only by a process that parses
    from dbt.adapters.factory import reset_adapters
    from dbt.cli.main import dbtRunner

    # As absolute paths: dbt reads a relative log path from the working directory, which is the
    # project's only for a `dbt` process started there.
    args = [
        *command,
        *("--project-dir", str(project_dir), "--profiles-dir", str(profiles_dir)),
        *("--target-path", str(target_path), "--log-path", str(log_path)),
        "--no-send-anonymous-usage-stats",
        *options,
    ]
    parsed = dbtRunner().invoke(args)
    # dbt's adapter for the parse keeps the whole parsed manifest (300,000 objects at 5,000
    # models) until dbt's next command; this process has no use for either.
    reset_adapters()
    if isinstance(parsed.exception, KeyboardInterrupt):
        raise parsed.exception  # dbtRunner returns even an interrupt as a failed result
    if not parsed.success:
        raise DbtParseFailed(project_dir, parsed.exception)


class DbtParseFailed(Exception):
    """`dbt parse` failed while Dagster refreshed the component's state: dbt's own message,
    which names the file."""

    def __init__(self, project_dir: Path, error: BaseException | None):
        super().__init__(f"dbt parse failed for the dbt project in {project_dir}:\n{error}")
