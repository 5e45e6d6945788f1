"""The copy of the dbt project that a state refresh keeps beside the component's state.

dagster-dbt deletes that copy and copies the whole project again on every refresh: at 5,000
models, 5,259 files and 43 MB, 3 s of each `dg check defs` after a one-line edit. This copy
is brought up to date instead: a file is copied again only when its size or modification time
differs (as rsync decides), and what the project no longer has is deleted, but for what runs
write: Dagster's runs build in this copy, and dagster-dbt gives each run a folder of its own in
dbt's target folder, which a refresh (`dg check defs`, a reload of `dg dev`) must not delete
under a run that is writing it, nor keep for ever (1.5 MB a run for the demo, the size of the
manifest and more at 5,000 models). A run's folder goes once its dbt has finished (dbt writes
`run_results.json` last) and an hour has passed: the run reads it only while it records what
dbt built.
"""

import os
import shutil
import time
from pathlib import Path

# dagster-dbt's snapshot leaves these out too.
EXCLUDED_NAMES = frozenset({".git"})
FINISHED_RUN_KEPT_SECONDS = 3600


def mirror(source: Path, destination: Path, runs_write_in: Path | None = None) -> None:
    """Make `destination` hold exactly the files of `source` (symbolic links followed); inside
    `runs_write_in` (relative: dbt's target folder), only add and update."""
    kept = _copy_changed_files(source, destination)
    _delete_what_is_not(kept, destination, runs_write_in)
    if runs_write_in is not None:
        _delete_finished_runs(kept, destination, runs_write_in)


def _copy_changed_files(source: Path, destination: Path) -> set[Path]:
    kept: set[Path] = {Path(".")}
    the_copy = destination.resolve()  # which may live inside the project it copies
    for folder, subfolders, files in os.walk(source, followlinks=True):
        here = Path(folder)
        subfolders[:] = [
            name
            for name in subfolders
            if name not in EXCLUDED_NAMES and (here / name).resolve() != the_copy
        ]
        relative = here.relative_to(source)
        _make_folder(destination / relative)
        kept.update(relative / name for name in subfolders)
        for name in files:
            kept.add(relative / name)
            _copy_if_changed(here / name, destination / relative / name)
    return kept


def _make_folder(path: Path) -> None:
    if path.is_file():  # the project now has a folder where it had a file
        path.unlink()
    path.mkdir(parents=True, exist_ok=True)


def _copy_if_changed(source: Path, destination: Path) -> None:
    if destination.is_dir():  # the project now has a file where it had a folder
        shutil.rmtree(destination)
    if not _same_size_and_time(source, destination):
        shutil.copy2(source, destination)  # copies the modification time, for the next check


def _same_size_and_time(source: Path, destination: Path) -> bool:
    try:
        present = destination.stat()
    except FileNotFoundError:
        return False
    wanted = source.stat()
    return (present.st_size, present.st_mtime_ns) == (wanted.st_size, wanted.st_mtime_ns)


def _delete_what_is_not(kept: set[Path], destination: Path, runs_write_in: Path | None) -> None:
    """The copy holds only folders and regular files: `mirror` writes no links."""
    for folder, _, files in os.walk(destination, topdown=False):
        here = Path(folder)
        relative = here.relative_to(destination)
        if runs_write_in is not None and runs_write_in in (relative, *relative.parents):
            continue
        for name in files:
            if relative / name not in kept:
                (here / name).unlink()
        if relative not in kept:
            here.rmdir()


def _delete_finished_runs(kept: set[Path], destination: Path, runs_write_in: Path) -> None:
    """Each folder of dbt's target folder that the project lacks is a run's: deleted once its
    dbt finished more than `FINISHED_RUN_KEPT_SECONDS` ago."""
    runs = destination / runs_write_in
    if not runs.is_dir():
        return
    finished_before = time.time() - FINISHED_RUN_KEPT_SECONDS
    for run in runs.iterdir():
        if runs_write_in / run.name not in kept and _finished_before(run, finished_before):
            shutil.rmtree(run, ignore_errors=True)  # a refresh at the same time may delete it too


def _finished_before(run: Path, moment: float) -> bool:
    try:
        return (run / "run_results.json").stat().st_mtime < moment
    except (FileNotFoundError, NotADirectoryError):  # running, or not a run's folder
        return False
