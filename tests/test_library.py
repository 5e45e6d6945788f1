"""The component library in another Dagster project, as the README's "Use it in your project"
says: the wheel built from this checkout, installed with this lock's versions into a fresh
project laid out as `create-dagster project` lays one out, then `dg list components`,
`dg scaffold defs` on a small dbt project that is not the demo's (tests/fixtures/events_dbt: its
own folders, a source, an incremental model, a macro) and `dg check defs`, run as written.

Slow (a venv, a wheel, dbt parses): `nox -s library`, which CI runs.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import REPO_ROOT, SESSION_VARIABLES, in_a_quick_start_shell, readme_block

EVENTS_DBT = REPO_ROOT / "tests" / "fixtures" / "events_dbt"
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"  # this session's, as a user's

pytestmark = pytest.mark.library

# What `create-dagster project my_project` writes (Dagster 1.13), less its README and tests.
PYPROJECT = """\
[project]
name = "my_project"
version = "0.1.0"
requires-python = ">=3.10,<3.14"
dependencies = ["dagster"]

[dependency-groups]
dev = ["dagster-webserver", "dagster-dg-cli"]

[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[tool.hatch.build.targets.wheel]
packages = ["src/my_project"]

[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "my_project"
registry_modules = ["my_project.components.*"]
"""
DEFINITIONS = """\
from pathlib import Path

from dagster import definitions, load_from_defs_folder


@definitions
def defs():
    return load_from_defs_folder(path_within_project=Path(__file__).parent.parent.parent)
"""


@pytest.fixture(scope="module")
def your_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A fresh Dagster project with its own venv (dagster and dg, at this lock's versions, and
    the project itself, as `create-dagster project` and `uv sync` leave it) and a dbt project."""
    project = tmp_path_factory.mktemp("your") / "my_project"
    package = project / "src" / "my_project"
    (package / "defs").mkdir(parents=True)
    (package / "components").mkdir()
    (project / "pyproject.toml").write_text(PYPROJECT)
    (package / "__init__.py").write_text("")
    (package / "definitions.py").write_text(DEFINITIONS)
    (package / "defs" / "__init__.py").write_text("")
    (package / "components" / "__init__.py").write_text("")
    shutil.copytree(EVENTS_DBT, project / "my_dbt")
    venv = project / ".venv"
    env = {  # nothing of this session's (nox's UV_PYTHON would install into its venv)
        **{key: value for key, value in os.environ.items() if key not in SESSION_VARIABLES},
        "VIRTUAL_ENV": str(venv),
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "UV_PYTHON_DOWNLOADS": "never",
        "DAGSTER_HOME": str(project / ".dagster_home"),
    }
    (project / ".dagster_home").mkdir()
    pins = project / "pins.txt"
    _run(["uv", "export", "--frozen", "--no-hashes", "--no-emit-project", "-o", str(pins)],
         REPO_ROOT, env)  # fmt: skip
    _run(["uv", "venv", "--python", PYTHON, str(venv)], project, env)
    _run(["uv", "pip", "install", "-c", str(pins), "dagster", "dagster-webserver",
          "dagster-dg-cli", "-e", str(project)], project, env)  # fmt: skip
    return project, env


def test_the_readmes_commands_install_list_scaffold_and_check_in_your_project(your_project):
    project, env = your_project
    # Run from this clone, as written: $HOME/my_project is the fresh project, and uv keeps its
    # cache where it is (a new HOME would move it).
    cache = _run(["uv", "cache", "dir"], REPO_ROOT, env).strip()
    ran = in_a_quick_start_shell(
        readme_block("use-in-your-project"), cwd=REPO_ROOT, HOME=str(project.parent),
        UV_CACHE_DIR=cache,
    )  # fmt: skip
    assert ran.returncode == 0, f"HOME={project.parent}\n{ran.stdout[-3000:]}{ran.stderr[-3000:]}"
    assert "dbt_automation_demo.components.CustomDbtComponent" in ran.stdout
    assert "dbt_automation_demo.components.SafeScheduledJobComponent" in ran.stdout

    listed = _run(["dg", "list", "components", "--json"], project, env)
    ours = {
        item["key"] for item in json.loads(listed)["items"] if "dbt_automation_demo" in item["key"]
    }
    assert ours == {
        "dbt_automation_demo.components.CustomDbtComponent",
        "dbt_automation_demo.components.SafeScheduledJobComponent",
    }

    defs = json.loads(_run(["dg", "list", "defs", "--json"], project, env))
    assets = {asset["asset_key"]: asset for asset in defs["assets"]}
    labels = {
        key: (asset.get("automation_condition") or {}).get("label") for key, asset in assets.items()
    }
    daily = "refresh on cron '0 6 * * *' (UTC)"
    assert labels == {
        "app/raw_events": None,  # a dbt source: observed, never built
        "stg_events": "refresh on SQL change or parent update",
        "daily_revenue": daily,
        "user_totals": daily,
    }
    materializations = {
        key: {tag["key"]: tag["value"] for tag in asset.get("tags", [])}.get(
            "dagster/materialization"
        )
        for key, asset in assets.items()
    }
    assert materializations == {
        "app/raw_events": None,
        "stg_events": "view",
        "daily_revenue": "incremental",
        "user_totals": "table",
    }
    assert {sensor["name"] for sensor in defs["sensors"]} == {"events_automation_sensor"}


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    ran = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert ran.returncode == 0, f"{command}:\n{ran.stdout[-3000:]}{ran.stderr[-3000:]}"
    return ran.stdout
