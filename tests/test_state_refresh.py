"""What `dg check defs` and `dg dev` do after an edit: refresh the component's state (dbt's parse
and a copy of the project beside it), then build the definitions from it."""

import os
import subprocess
import sys
import time
from pathlib import Path

from dbt_automation_demo.components.custom_dbt_component import CustomDbtComponent
from dbt_automation_demo.internals.project_snapshot import mirror
from harness import copy_dbt_project, edit_logic


def files_and_contents(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file()
    }


def change_times(folder: Path) -> dict[str, int]:
    """When each file was last written (or had its times set): a copy that skips a file
    leaves this unchanged."""
    return {
        str(path.relative_to(folder)): path.stat().st_ctime_ns
        for path in folder.rglob("*")
        if path.is_file()
    }


def test_a_refresh_copies_again_only_the_files_an_edit_changed(tmp_path):
    project_dir = copy_dbt_project(tmp_path / "analytics_dbt")
    component = CustomDbtComponent.from_attributes_dict(attributes={"project": str(project_dir)})
    state_path = tmp_path / "state" / "state"
    component.write_state_to_path(state_path)
    copy = state_path.parent / "project"
    before = change_times(copy)

    edit_logic(project_dir, "stg_orders")
    component.write_state_to_path(state_path)

    assert files_and_contents(copy) == files_and_contents(project_dir)
    rewritten = {name for name, changed in change_times(copy).items() if before[name] != changed}
    # dbt's parse rewrites its artifacts in target/ even for a comment; nothing else changed.
    assert {name for name in rewritten if not name.startswith("target/")} == {
        "models/staging/stg_orders.sql"
    }


def test_a_refresh_deletes_a_runs_folder_only_an_hour_after_its_dbt_finished(tmp_path):
    """Runs build in the copy, each writing its artifacts to a folder of its own in dbt's
    target folder; a refresh meanwhile (`dg check defs`, a reload) must not delete them under
    the run, nor keep them for ever."""
    project_dir = copy_dbt_project(tmp_path / "analytics_dbt")
    component = CustomDbtComponent.from_attributes_dict(attributes={"project": str(project_dir)})
    state_path = tmp_path / "state" / "state"
    component.write_state_to_path(state_path)
    copy = state_path.parent / "project"
    write_files(
        copy,
        {
            "target/analytics_dbt-running/run/a.sql": "dbt writes",
            "target/analytics_dbt-finished/run_results.json": "{}",
            "target/analytics_dbt-finished-long-ago/run_results.json": "{}",
            "models/stray.sql": "x",
        },
    )
    two_hours_ago = time.time() - 7200
    long_ago = copy / "target" / "analytics_dbt-finished-long-ago" / "run_results.json"
    os.utime(long_ago, (two_hours_ago, two_hours_ago))

    component.write_state_to_path(state_path)

    runs = {path.name for path in (copy / "target").iterdir() if path.is_dir()}
    assert runs == {"analytics_dbt-running", "analytics_dbt-finished"}
    assert (copy / "target" / "analytics_dbt-running" / "run" / "a.sql").read_text() == "dbt writes"
    assert not (copy / "models" / "stray.sql").exists()


def test_the_copy_loses_what_the_project_no_longer_has(tmp_path):
    source, copy = tmp_path / "project", tmp_path / "copy"
    write_files(source, {"models/a.sql": "a", "models/old/b.sql": "b", "notes.md": "n"})
    mirror(source, copy)
    (source / "models" / "old" / "b.sql").unlink()
    (source / "models" / "old").rmdir()
    (source / "notes.md").unlink()
    write_files(source, {"models/old": "now a file", "notes.md/c.sql": "now a folder"})

    mirror(source, copy)

    assert files_and_contents(copy) == {
        "models/a.sql": b"a",
        "models/old": b"now a file",
        "notes.md/c.sql": b"now a folder",
    }


def test_the_copy_leaves_out_git_and_itself_when_it_lives_inside_the_project(tmp_path):
    source = tmp_path / "project"
    write_files(source, {"dbt_project.yml": "name: x", ".git/HEAD": "ref", "models/a.sql": "a"})
    copy = source / ".local_defs_state" / "project"

    mirror(source, copy)
    mirror(source, copy)  # a second refresh does not copy the first copy into itself

    assert files_and_contents(copy) == {"dbt_project.yml": b"name: x", "models/a.sql": b"a"}


def write_files(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_a_process_freezes_its_first_build_only_and_collects_as_before(tmp_path):
    """`collector.py`: the first build's objects are frozen (later collections skip them); a
    second build freezes nothing more, so what it drops is collected as usual."""
    project_dir = copy_dbt_project(tmp_path / "analytics_dbt", keep_manifest=False)
    script = f"""
import gc
from pathlib import Path
from dbt_automation_demo.replay import build_defs, parse
parse(Path({str(project_dir)!r}))
counts = [gc.get_freeze_count()]
for _ in range(2):
    build_defs(Path({str(project_dir)!r}))
    counts.append(gc.get_freeze_count())
print(*counts, gc.isenabled())
"""
    printed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=os.environ, check=True
    )
    before, after_first, after_second, enabled = printed.stdout.split()
    assert (int(before), enabled) == (0, "True")
    assert int(after_first) > 0
    assert int(after_second) <= int(after_first)  # frozen objects still go when unreferenced
