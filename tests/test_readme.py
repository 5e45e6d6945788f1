"""The README is part of the product: its commands are the ones CI runs, and its snippet works."""

import re
import subprocess

import dagster as dg

from dbt_automation_demo import conditions
from dbt_automation_demo.automation import refresh_daily, refresh_on_change
from dbt_automation_demo.internals import conditions as internal_conditions
from dbt_automation_demo.internals import what_changed
from harness import (
    ALL_ASSETS,
    DOCUMENTS,
    REPO_ROOT,
    SOURCES,
    in_a_quick_start_shell,
    readme_block,
)

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
    listed = in_a_quick_start_shell(readme_block("list-defs"), cwd=REPO_ROOT)
    assert listed.returncode == 0, listed.stderr[-3000:]
    rows = {line.split()[0]: line.split(maxsplit=2)[1:] for line in listed.stdout.splitlines()}
    assert set(rows) == ALL_ASSETS | SOURCES
    assert rows["landing/payments"] == ["-", "none"]  # observed, never materialized
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


def test_the_readmes_policies_are_the_conditions_the_component_builds():
    readme = (REPO_ROOT / "docs" / "conditions.md").read_text()
    views = re.search(r"```python\n(# Views: refresh_on_change\(\)\n.*?)```", readme, re.S)
    daily = re.search(r"```python\n(# Everything else: refresh_daily\(.*?)```", readme, re.S)
    assert shape(from_readme(views.group(1))) == shape(refresh_on_change())
    assert shape(from_readme(daily.group(1), cron="0 6 * * *", timezone="UTC")) == shape(
        refresh_daily("0 6 * * *", "UTC")
    )


# Our condition classes (conditions.py, internals/conditions.py and what_changed.py), by name.
OUR_CONDITIONS = {
    name: value
    for module in (conditions, internal_conditions, what_changed)
    for name, value in vars(module).items()
    if isinstance(value, type)
    and issubclass(value, dg.AutomationCondition)
    and value.__module__ == module.__name__
}


def from_readme(code: str, **names: str) -> dg.AutomationCondition:
    """The README's block run as Python: its assignments, then its last line's condition
    (comments and blank lines aside), with Dagster's conditions and ours."""
    namespace = {
        name: getattr(dg.AutomationCondition, name) for name in dir(dg.AutomationCondition)
    }
    namespace.update(OUR_CONDITIONS, **names)
    lines = [line for line in code.splitlines() if line.strip() and not line.startswith("#")]
    *assignments, expression = lines
    exec("\n".join(assignments), namespace)
    return eval(expression, namespace)


def shape(condition: dg.AutomationCondition) -> tuple:
    """The condition's tree of node kinds, without labels or the selections a node allows; an
    `&` (or `|`) inside another, which a label keeps apart, is read as one (`a & (b & c)`)."""
    kind = type(condition).__name__
    children = []
    for child in map(shape, condition.children):
        associative = kind in {"AndAutomationCondition", "OrAutomationCondition"}
        children.extend(child[1] if associative and child[0] == kind else [child])
    return (kind, tuple(children))


def names_of_the_behaviour_tables_tests() -> set[str]:
    rows = re.findall(
        r"^\| (?:view|cron|both|reuse) \|.*$", (REPO_ROOT / "README.md").read_text(), re.M
    )
    assert len(rows) >= 25
    return {name for row in rows for name in re.findall(r"`(test_\w+)`", row)}


def module_of_each_test() -> dict[str, str]:
    return {
        name: f"tests/{source.name}"
        for source in (REPO_ROOT / "tests").glob("test_*.py")
        for name in re.findall(r"^def (test_\w+)", source.read_text(), flags=re.MULTILINE)
    }


def test_every_test_the_behaviour_table_names_exists():
    named = names_of_the_behaviour_tables_tests()
    defined = module_of_each_test().keys()
    assert len(named) >= 25
    assert named <= defined, named - defined


def test_nox_stock_runs_every_module_the_behaviour_table_names():
    """The README says the scenarios also run with `speedups: false`."""
    noxfile = (REPO_ROOT / "noxfile.py").read_text()
    stock = re.search(r"^STOCK_TESTS = \((.*?)^\)", noxfile, re.M | re.S).group(1)
    modules = module_of_each_test()
    named_in = {modules[name] for name in names_of_the_behaviour_tables_tests() if name in modules}
    assert named_in <= set(re.findall(r'"(tests/test_\w+\.py)"', stock))


def test_the_readme_is_a_landing_page_of_at_most_250_lines():
    assert len((REPO_ROOT / "README.md").read_text().splitlines()) <= 250


def test_every_relative_link_of_the_readme_and_docs_resolves():
    broken = []
    for document in DOCUMENTS:
        for target in re.findall(r"\]\(([^)\s]+)\)", document.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            path, _, anchor = target.partition("#")
            linked = (document.parent / path).resolve() if path else document
            if not linked.exists():
                broken.append(f"{document.name}: {target} (no such file)")
            elif anchor and anchor not in _anchors(linked):
                broken.append(f"{document.name}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def _anchors(document) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file."""
    if document.suffix != ".md":
        return set()
    headings = re.findall(r"^#+ (.+)$", document.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}
