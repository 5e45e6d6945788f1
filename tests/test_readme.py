"""The README is part of the product: its commands are the ones CI runs, and its snippet works."""

import re
import subprocess

from harness import ALL_ASSETS, REPO_ROOT, readme_block

CI_RUN = (REPO_ROOT / ".ci" / "run").read_text()


def test_ci_runs_the_readme_quick_start_as_written():
    quick_start = readme_block("quick-start").splitlines()
    ci_block = re.search(r"# >>> README quick start\n(.*?)# <<< README quick start", CI_RUN, re.S)
    # `nox -s dev` serves until stopped; the live tests start it instead.
    assert ci_block.group(1).splitlines() == [line for line in quick_start if line != "nox -s dev"]
    assert "nox -s dev" in quick_start


def test_dg_check_defs_passes_from_the_project_root():
    checked = subprocess.run(["dg", "check", "defs"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "All definitions loaded successfully." in checked.stdout + checked.stderr


def test_listing_snippet_prints_every_asset_with_its_tag_and_condition():
    listed = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_block("list-defs")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split(maxsplit=2)[1:] for line in listed.stdout.splitlines()}
    assert set(rows) == ALL_ASSETS
    assert rows["stg_customers"] == ["view", "refresh on SQL change or parent update"]
    assert rows["order_summary"] == ["table", "refresh on cron '0 6 * * *' (UTC)"]
    assert rows["raw_orders"] == ["seed", "refresh on cron '0 6 * * *' (UTC)"]


def test_the_session_table_lists_every_nox_session_and_whether_nox_runs_it_by_default():
    listed = subprocess.run(["nox", "--list"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    # `nox --list` marks the default sessions with * and the others with -.
    in_noxfile = {
        name: "yes" if mark == "*" else "no"
        for mark, name in re.findall(r"^([*-]) (\S+) ->", listed.stdout, flags=re.MULTILINE)
    }
    readme = (REPO_ROOT / "README.md").read_text()
    in_readme = dict(re.findall(r"^\| `nox -s (\S+)` \| .* \| (yes|no) \|$", readme, re.MULTILINE))
    assert in_readme == in_noxfile
