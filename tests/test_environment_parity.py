"""Every door (nox, `nix develop`, the devcontainer, CI) ends in the same Python and lock."""

import json
import os
import re
import shutil
import subprocess
import tomllib

import json5
import nox
import pytest
import yaml

from harness import REPO_ROOT, load_noxfile, readme_block, supported_pythons

DEVCONTAINER = json5.loads((REPO_ROOT / ".devcontainer" / "devcontainer.json").read_text())
FLAKE = (REPO_ROOT / "flake.nix").read_text()
WORKFLOW = (REPO_ROOT / ".github" / "workflows" / "ci.yml").read_text()
DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()
PINS = REPO_ROOT.parent / "shared" / "pins.md"
NIX_STUB = REPO_ROOT / "tests" / "fixtures" / "nixpkgs-stub"
NIX = ["nix", "--extra-experimental-features", "nix-command flakes"]


def require(tool: str) -> None:
    """CI installs every tool these tests use; elsewhere a missing one skips them."""
    if shutil.which(tool) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is not installed, but .ci/run installs it")
        pytest.skip(f"{tool} is not installed")


def nox_sessions() -> dict[str, object]:
    """Session name -> its Python, as nox reads the noxfile."""
    load_noxfile()
    return {name: session.python for name, session in nox.registry.get().items()}


def readme_bootstrap() -> str:
    """The quick start's first line: the two tools, pinned, in a venv of their own (.tools)."""
    return readme_block("quick-start").splitlines()[0]


def nox_runs(text: str) -> set[tuple[str, str]]:
    """Each session a `nox -s ...` line runs, with its arguments after `--`."""
    runs = set()
    for sessions, arguments in re.findall(r"\bnox -s ([\w -]+?)(?: -- (.*))?$", text, re.MULTILINE):
        runs |= {(session, arguments.strip()) for session in sessions.split()}
    return runs


# The doors that bring their own Python (the flake, the devcontainer, the image) bring the oldest
# one supported: the one CI's Debian 12 has, so every door's Python runs somewhere here.
PYTHON = supported_pythons()[0]


def test_the_sessions_run_on_a_python_requires_python_admits_and_the_doors_on_its_oldest():
    assert supported_pythons() == ["3.11", "3.12", "3.13"]
    noxfile = load_noxfile()
    assert list(noxfile.SUPPORTED_PYTHONS) == supported_pythons()
    sessions = nox_sessions()
    assert {name for name, python in sessions.items() if python is False} == {
        "reset",
        "deploy-up",
        "deploy-down",
    }
    assert {python for python in sessions.values() if python is not False} == {noxfile.PYTHON}
    assert noxfile.PYTHON in supported_pythons()
    major_minor = PYTHON.replace(".", "")
    assert f"python = pkgs.python{major_minor};" in FLAKE
    assert f'UV_PYTHON = "${{python}}/bin/python{PYTHON}";' in FLAKE
    assert re.fullmatch(
        rf"mcr\.microsoft\.com/devcontainers/python:\d+-{re.escape(PYTHON)}-\w+",
        DEVCONTAINER["image"],
    )
    assert re.findall(r"^FROM \S*?python:?(3\.\d+)", DOCKERFILE, re.MULTILINE) == [PYTHON] * 2


def test_the_sessions_take_the_python_nox_runs_on_else_the_newest_supported_one_on_path(
    tmp_path,
):
    noxfile = load_noxfile()
    assert noxfile.project_python("3.13", path=str(tmp_path)) == "3.13"
    assert noxfile.project_python("3.11", path=str(tmp_path)) == "3.11"
    assert noxfile.project_python("3.10", path=str(tmp_path)) is None
    for version, runs in (("3.11", True), ("3.12", True), ("3.13", False), ("3.14", True)):
        (tmp_path / f"python{version}").write_text(f"#!/bin/sh\nexit {0 if runs else 1}\n")
        (tmp_path / f"python{version}").chmod(0o755)
    # python3.13 does not start (as a pyenv shim of a version not selected): passed over.
    assert noxfile.project_python("3.10", path=str(tmp_path)) == "3.12"
    assert noxfile.project_python("3.14", path=str(tmp_path)) == "3.12"


def test_with_no_supported_python_a_session_says_which_are_and_how_uv_installs_one(tmp_path):
    (tmp_path / "noxfile.py").write_text(
        (REPO_ROOT / "noxfile.py").read_text().replace('"3.11", "3.12", "3.13"', '"3.8", "3.9"')
    )
    tools = os.path.dirname(shutil.which("nox"))
    uv = os.path.dirname(shutil.which("uv"))
    path = os.pathsep.join([tools, uv, "/usr/bin", "/bin"])  # no pyenv shims of 3.8 or 3.9
    ran = subprocess.run(["nox", "-s", "check"], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PATH": path})  # fmt: skip
    assert ran.returncode != 0
    said = " ".join((ran.stdout + ran.stderr).split())
    running = subprocess.run([os.path.join(tools, "python"), "-c",
                              "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert (
        f"this project needs Python 3.8 or 3.9 (pyproject's requires-python); nox runs on "
        f"{running} and finds no python3.8..python3.9 on PATH" in said
    ), said[-2000:]
    assert "`.tools/bin/uv python install 3.9`" in said


def check_jsonschema(*arguments: object) -> None:
    """check-jsonschema (the pre-commit hooks' validator) passes on the arguments' file."""
    checked = subprocess.run(["check-jsonschema", *arguments], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_devcontainer_validates_against_its_schema():
    check_jsonschema("--force-filetype", "json5",
                     "--schemafile", REPO_ROOT / "schemas" / "devContainer.base.schema.json",
                     REPO_ROOT / ".devcontainer" / "devcontainer.json")  # fmt: skip


def test_devcontainer_first_start_is_the_readme_bootstrap_with_the_same_defaults():
    assert readme_block("quick-start").splitlines()[1] == 'export PATH="$PWD/.tools/bin:$PATH"'
    assert DEVCONTAINER["postCreateCommand"] == (
        f"{readme_bootstrap()} && .tools/bin/uv sync --frozen --group dev"
    )
    assert DEVCONTAINER["remoteEnv"] == {
        "PATH": "${containerWorkspaceFolder}/.tools/bin:${containerEnv:PATH}"
    }
    # What `nox -s tests` checks for first, installed when the container is created.
    assert DEVCONTAINER["onCreateCommand"].endswith(
        "apt-get install -y --no-install-recommends postgresql chromium curl libatomic1"
    )
    assert DEVCONTAINER["containerEnv"] == {
        "DAGSTER_HOME": "${containerWorkspaceFolder}/dagster_home",
        "DBT_DUCKDB_PATH": "${containerWorkspaceFolder}/analytics_dbt/data/analytics.duckdb",
        "DBT_LANDING_ZONE": "${containerWorkspaceFolder}/analytics_dbt/landing",
        "UV_PYTHON_DOWNLOADS": "never",
    }
    assert DEVCONTAINER["forwardPorts"] == [3000]
    assert DEVCONTAINER["portsAttributes"]["3000"] == {
        "label": "Dagster UI",
        "onAutoForward": "notify",
    }


def test_every_door_installs_from_the_lock_frozen():
    noxfile = (REPO_ROOT / "noxfile.py").read_text()
    assert '"uv",\n            "sync",\n            "--frozen",' in noxfile
    assert "uv sync --frozen --group dev" in FLAKE
    # The nox and container jobs bootstrap as the README does; the nix job uses the flake's nox.
    assert WORKFLOW.count(readme_bootstrap()) == 2


def test_workflow_validates_against_githubs_schema():
    check_jsonschema("--builtin-schema", "vendor.github-workflows",
                     REPO_ROOT / ".github" / "workflows" / "ci.yml")  # fmt: skip


def test_workflow_runs_the_sessions_ci_run_runs():
    ci_run = (REPO_ROOT / ".ci" / "run").read_text()
    assert nox_runs(WORKFLOW) == nox_runs(ci_run)
    assert ("container", "") in nox_runs(WORKFLOW)


def test_workflows_container_job_installs_what_nox_s_container_needs_beside_docker():
    (container,) = [job for name, job in yaml.safe_load(WORKFLOW)["jobs"].items()
                    if name == "container"]  # fmt: skip
    installed = " ".join(step.get("run", "") for step in container["steps"]).split()
    assert {"mmdebstrap", "docker-compose"} <= set(installed)


def test_workflow_takes_every_version_from_the_repositorys_own_files():
    jobs = yaml.safe_load(WORKFLOW)["jobs"]
    pythons = [
        step["with"]
        for job in jobs.values()
        for step in job["steps"]
        if step.get("uses", "").startswith("actions/setup-python@")
    ]
    assert pythons == [{"python-version": "${{ matrix.python }}"}, {"python-version": PYTHON}]
    assert jobs["nox"]["strategy"]["matrix"]["python"] == supported_pythons()
    # The devcontainer CLI only through `nox -s container` (npm ci on containers/package.json).
    assert "@devcontainers/cli" not in WORKFLOW
    cli = json.loads((REPO_ROOT / "containers" / "package.json").read_text())["dependencies"]
    lock = json.loads((REPO_ROOT / "containers" / "package-lock.json").read_text())
    assert (
        lock["packages"]["node_modules/@devcontainers/cli"]["version"]
        == (cli["@devcontainers/cli"])
    )
    # uv and nox: the README's pins; the lock-check hook runs the same uv.
    pins = dict(re.findall(r'"(uv|nox)==([\d.]+)"', readme_bootstrap()))
    hooks = yaml.safe_load((REPO_ROOT / ".pre-commit-config.yaml").read_text())
    (uv_hook,) = [h for r in hooks["repos"] for h in r["hooks"] if h["id"] == "uv-lock"]
    assert uv_hook["additional_dependencies"] == [f"uv=={pins['uv']}"]
    assert set(pins) == {"uv", "nox"}


def test_flake_parses():
    require("nix-instantiate")
    subprocess.run(["nix-instantiate", "--parse", REPO_ROOT / "flake.nix"], check=True,
                   capture_output=True)  # fmt: skip


def test_flake_lock_agrees_with_the_flake_and_pins_the_verified_nixpkgs():
    require("nix")
    metadata = subprocess.run(
        [*NIX, "flake", "metadata", "--offline", "--json", REPO_ROOT],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    locks = json.loads(metadata.stdout)["locks"]
    assert locks == json.loads((REPO_ROOT / "flake.lock").read_text())
    assert locks["nodes"]["root"]["inputs"] == {"nixpkgs": "nixpkgs"}
    locked = locks["nodes"]["nixpkgs"]["locked"]
    if not PINS.exists():
        pytest.skip("../shared/pins.md is not beside this checkout")
    pins = PINS.read_text()
    for field in ("rev", "narHash", "lastModified"):
        assert re.search(rf"\| {field} \| {re.escape(str(locked[field]))}[ |]", pins), field


@pytest.mark.parametrize("system", ["x86_64-linux", "aarch64-linux", "x86_64-darwin",
                                    "aarch64-darwin"])  # fmt: skip
def test_dev_shell_has_the_tools_and_the_project_defaults(system):
    require("nix")
    evaluated = subprocess.run(
        [*NIX, "eval", "--offline", "--no-write-lock-file", "--json",
         "--override-input", "nixpkgs", f"path:{NIX_STUB}",
         f"{REPO_ROOT}#devShells.{system}.default"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    shell = json.loads(evaluated.stdout)
    names = [path.split("-", 1)[1] for path in shell["packages"]]
    assert names == [
        f"python{PYTHON}",
        "uv",
        f"python{PYTHON}-nox",
        "pre-commit",
        "duckdb",
        "postgresql",
    ]
    assert shell["env"]["UV_PYTHON"].endswith(f"-python{PYTHON}/bin/python{PYTHON}")
    assert shell["env"]["UV_PYTHON_DOWNLOADS"] == "never"
    assert ("LD_LIBRARY_PATH" in shell["env"]) == system.endswith("linux")
    assert shell["shellHook"].splitlines() == [
        'export DAGSTER_HOME="$PWD/dagster_home"',
        'export DBT_DUCKDB_PATH="$PWD/analytics_dbt/data/analytics.duckdb"',
        'export DBT_LANDING_ZONE="$PWD/analytics_dbt/landing"',
        "uv sync --frozen --group dev",
        "source .venv/bin/activate",
    ]


def test_pre_commit_hooks_use_the_locked_versions_of_locked_tools():
    lock = tomllib.loads((REPO_ROOT / "uv.lock").read_text())
    locked = {package["name"]: package.get("version") for package in lock["package"]}
    hooks = yaml.safe_load((REPO_ROOT / ".pre-commit-config.yaml").read_text())
    pinned = {
        name: version
        for repo in hooks["repos"]
        for hook in repo["hooks"]
        for name, version in (dep.split("==") for dep in hook.get("additional_dependencies", []))
    }
    shared = {name for name in pinned if name in locked}
    assert shared >= {"ruff", "dbt-core", "dbt-duckdb", "check-jsonschema", "json5"}
    assert {name: pinned[name] for name in shared} == {name: locked[name] for name in shared}


def test_tests_session_names_each_missing_system_prerequisite_and_how_to_install_it(tmp_path):
    noxfile = load_noxfile()
    nothing = str(tmp_path)  # a PATH with no programs, and no PostgreSQL server folder
    postgres, chromium, curl = noxfile.missing_test_prerequisites(
        path=nothing, postgres_servers=f"{nothing}/*", chromium=f"{nothing}/chromium"
    )
    assert install_lines(postgres) == {
        "Debian/Ubuntu": "sudo apt-get install postgresql",
        "macOS": "brew install postgresql@16, then put it on PATH (it is keg-only):",
    }
    assert postgres.splitlines()[-1].strip() == (
        'export PATH="$(brew --prefix postgresql@16)/bin:$PATH"'
    )
    assert install_lines(chromium) == {
        "Debian/Ubuntu": "sudo apt-get install chromium",
        "macOS": "brew install --cask google-chrome, then",
    }
    assert f"now {nothing}/chromium" in chromium.splitlines()[0]
    assert chromium.splitlines()[-1].strip() == (
        'export CHROMIUM="/Applications/Google Chrome.app/Contents/MacOS/Google Chrome"'
    )
    assert install_lines(curl) == {
        "Debian/Ubuntu": "sudo apt-get install curl",
        "macOS": "brew install curl (macOS ships one in /usr/bin)",
    }
    assert noxfile.missing_test_prerequisites() == []  # this machine has them (CI installs them)


def test_nox_tests_stops_first_and_says_what_is_missing():
    require("nox")
    stopped = subprocess.run(
        ["nox", "-s", "tests"],
        cwd=REPO_ROOT,
        env={**os.environ, "CHROMIUM": "/nowhere/chromium"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stopped.returncode != 0
    assert "nox -s tests needs:\n- Chromium or Chrome, for the browser test" in stopped.stderr
    assert "sudo apt-get install chromium" in stopped.stderr
    assert "pytest" not in stopped.stderr  # stopped before the suite


def install_lines(message: str) -> dict[str, str]:
    """`Debian/Ubuntu: ...` and `macOS: ...` lines of a prerequisite's message."""
    return dict(
        line.strip().split(": ", 1)
        for line in message.splitlines()[1:]
        if line.strip().startswith(("Debian/Ubuntu:", "macOS:"))
    )
