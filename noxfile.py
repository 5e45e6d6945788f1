"""Task runner: every session that runs Python installs the locked environment first
(`uv sync --frozen`); `reset`, `deploy-up` and `deploy-down` install nothing.

`nox -l` lists the sessions; `nox` runs the default ones (lint, check, tests).
"""

import argparse
import glob
import os
import random
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
# pyproject's requires-python, as versions (tests/test_environment_parity.py keeps them equal).
SUPPORTED_PYTHONS = ("3.11", "3.12", "3.13")
DAGSTER_HOME = ROOT / "dagster_home"
DUCKDB_PATH = ROOT / "analytics_dbt" / "data" / "analytics.duckdb"
LANDING_ZONE = ROOT / "analytics_dbt" / "landing"
LOCAL_DEFS_STATE = ROOT / "src" / "dbt_automation_demo" / "defs" / ".local_defs_state"
COMPOSE = ROOT / "deploy" / "compose"
DEPLOY_IMAGE = "dbt-automation-demo:deploy"  # docker-compose.yaml's default DAGSTER_IMAGE
DEPLOYMENT_LABEL = "dbt-automation-demo/deployment=compose"  # on every run's container

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lint", "check", "tests"]
nox.options.error_on_external_run = True
nox.options.reuse_venv = "yes"

# One set of defaults for every door into the project (nox, nix develop, the devcontainer).
PROJECT_ENV = {
    "DAGSTER_HOME": str(DAGSTER_HOME),
    "DBT_DUCKDB_PATH": str(DUCKDB_PATH),
    "DBT_LANDING_ZONE": str(LANDING_ZONE),
}


RUNNING_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"  # nox's own


def project_python(running: str = RUNNING_PYTHON, path: str | None = None) -> str | None:
    """The Python the sessions use: the one nox runs on (the `python3` the quick start made
    `.tools/` with) if supported, else the newest supported `python3.X` on PATH, else None."""
    if running in SUPPORTED_PYTHONS:
        return running
    found = [v for v in SUPPORTED_PYTHONS if _runs(shutil.which(f"python{v}", path=path))]
    return found[-1] if found else None


def _runs(python: str | None) -> bool:
    """This interpreter starts (a pyenv shim of a version not selected does not)."""
    return (
        python is not None
        and subprocess.run([python, "-c", ""], capture_output=True).returncode == 0
    )


def no_supported_python(running: str = RUNNING_PYTHON) -> str:
    """What to do when no Python here is one the lock supports."""
    *older, newest = SUPPORTED_PYTHONS
    versions = f"{', '.join(older)} or {newest}" if older else newest
    return (
        f"this project needs Python {versions} (pyproject's requires-python); nox runs on "
        f"{running} and finds no python{SUPPORTED_PYTHONS[0]}..python{newest} on PATH. Install "
        f"one from your system's packages, or with uv: `.tools/bin/uv python install {newest}` "
        f"(it puts python{newest} in ~/.local/bin), then run nox again"
    )


PYTHON = project_python()


def install_locked(session: nox.Session) -> None:
    """The exact packages of uv.lock (project and dev group) into this session's venv; with
    `nox --no-venv`, none: the session runs in the environment it is started from (as the tests
    run `nox -s fuzz`, from their own venv)."""
    if session.venv_backend != "none":
        if PYTHON is None:
            session.error(no_supported_python())
        session.run_install(
            "uv",
            "sync",
            "--frozen",
            "--group",
            "dev",
            # Compiled once here: every dg, dbt and test process would otherwise recompile
            # dagster and dbt from source where bytecode is not written (PYTHONDONTWRITEBYTECODE,
            # read-only).
            "--compile-bytecode",
            env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location, **PROJECT_ENV},
            external=True,
        )
    session.env.update({key: os.environ.get(key, value) for key, value in PROJECT_ENV.items()})


@nox.session(python=PYTHON)
def manifest(session: nox.Session) -> None:
    """Parse dbt and store the component's state, so later loads need no dbt parse."""
    install_locked(session)
    session.run("dg", "utils", "refresh-defs-state")


@nox.session(python=PYTHON)
def check(session: nox.Session) -> None:
    """Validate defs.yaml against the components' schemas and load every definition."""
    install_locked(session)
    session.run("dg", "check", "yaml")
    session.run("dg", "check", "defs")


# What `nox -s tests` needs from the system, and how to install each on Debian/Ubuntu and macOS.
POSTGRES_SERVER = (
    "a PostgreSQL server (initdb, pg_ctl), which the tests start on loopback\n"
    "    Debian/Ubuntu: sudo apt-get install postgresql\n"
    "    macOS: brew install postgresql@16, then put it on PATH (it is keg-only):\n"
    '           export PATH="$(brew --prefix postgresql@16)/bin:$PATH"'
)
CHROMIUM = (
    "Chromium or Chrome, for the browser test (CHROMIUM names it; now {chromium})\n"
    "    Debian/Ubuntu: sudo apt-get install chromium\n"
    "    macOS: brew install --cask google-chrome, then\n"
    '           export CHROMIUM="/Applications/Google Chrome.app/Contents/MacOS/Google Chrome"'
)
CURL = (
    "curl, which a README command the tests run uses\n"
    "    Debian/Ubuntu: sudo apt-get install curl\n"
    "    macOS: brew install curl (macOS ships one in /usr/bin)"
)


def missing_test_prerequisites(
    path: str | None = None,
    postgres_servers: str = "/usr/lib/postgresql/*/bin/pg_ctl",
    chromium: str = os.environ.get("CHROMIUM", "/usr/bin/chromium"),  # as the browser test
) -> list[str]:
    """The system programs `nox -s tests` needs that this machine lacks, each with how to
    install it (Nix is optional: the tests that use it are skipped without it)."""
    needed = {
        POSTGRES_SERVER: glob.glob(postgres_servers) or shutil.which("pg_ctl", path=path),
        CHROMIUM.format(chromium=chromium): shutil.which(chromium, path=path),
        CURL: shutil.which("curl", path=path),
    }
    return [what for what, found in needed.items() if not found]


# Four workers on two cores: a third of the suite waits (dev servers, sensor ticks, run queues),
# and meanwhile the others compute. A file's tests on one instance storage stay on one worker, in
# order (conftest.py): they share one dev server, or the worker's built instance; the files that
# wait most start first. docs/ci-time.md has the profile.
PARALLEL = ("-n", "4", "--dist", "loadscope", "--no-loadscope-reorder", "--durations=10")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (real Dagster, dbt and DuckDB); pass pytest arguments after --."""
    missing = missing_test_prerequisites()
    if missing:
        session.error("nox -s tests needs:\n" + "\n".join(f"- {what}" for what in missing))
    install_locked(session)
    # The random interleavings take minutes: `nox -s fuzz` runs them (CI with a fixed seed).
    session.run("pytest", *PARALLEL, "-m", "not interleavings and not library", *session.posargs)


@nox.session(python=PYTHON, default=False)
def container(session: nox.Session) -> None:
    """Real containers: the quick start on Debian 12's own Python, the Codespaces door
    (`devcontainer up`, then `nox -s check`, `demo`, `dev` and the live tests inside), the
    production image served, and the team deployment (`deploy-up`, `deploy-down`). Needs a
    Docker engine, Docker Compose, mmdebstrap and Node.js."""
    install_locked(session)
    session.run("npm", "ci", "--prefix", "containers", "--no-audit", "--no-fund", external=True)
    session.run("pytest", "containers", "--durations=0", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Run every pre-commit hook on every file (ruff, sqlfluff, schemas, lock check)."""
    install_locked(session)
    session.run("pre-commit", "run", "--all-files", "--show-diff-on-failure")


@nox.session(python=PYTHON, default=False)
def dev(session: nox.Session) -> None:
    """Serve the UI and daemon on http://127.0.0.1:3000; `-- --port N` for another port."""
    install_locked(session)
    DUCKDB_PATH.parent.mkdir(parents=True, exist_ok=True)
    session.run("python", "-m", "dbt_automation_demo.dev_server", *session.posargs)


@nox.session(name="dev-postgres", python=PYTHON, default=False)
def dev_postgres(session: nox.Session) -> None:
    """The dev server on PostgreSQL storage (deploy/dagster.yaml): set DAGSTER_PG_URL first."""
    install_locked(session)
    home = DAGSTER_HOME / "postgres"  # gitignored, like the rest of dagster_home's state
    home.mkdir(exist_ok=True)
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    session.env["DAGSTER_HOME"] = str(home)
    DUCKDB_PATH.parent.mkdir(parents=True, exist_ok=True)
    session.run("python", "-m", "dbt_automation_demo.dev_server", *session.posargs)


@nox.session(python=False, default=False)
def reset(session: nox.Session) -> None:
    """Start over: delete the DuckDB file and the local instance, keep dagster.yaml."""
    for path in (DUCKDB_PATH, DUCKDB_PATH.with_suffix(".duckdb.wal")):
        if path.exists():
            session.log(f"removing {path.relative_to(ROOT)}")
            path.unlink()
    for entry in DAGSTER_HOME.iterdir():
        if entry.name in {"dagster.yaml", ".gitignore"}:
            continue
        session.log(f"removing {entry.relative_to(ROOT)}")
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


@nox.session(name="deploy-up", python=False, default=False)
def deploy_up(session: nox.Session) -> None:
    """The team deployment (deploy/compose): build the image, start PostgreSQL, the code server,
    the webserver on http://127.0.0.1:3000 and the daemon; every run is its own container."""
    if session.posargs:
        session.error(f"nox -s deploy-up takes no arguments, not {session.posargs}")
    session.run("docker", "build", "--network=host", "--tag", DEPLOY_IMAGE, str(ROOT),
                env={"DOCKER_BUILDKIT": "1"}, external=True)  # fmt: skip
    compose(session, "up", "--detach")


@nox.session(name="deploy-down", python=False, default=False)
def deploy_down(session: nox.Session) -> None:
    """Stop and remove the deployment's containers, the runs' too; `-- --volumes` also deletes
    the instance database and the warehouse."""
    if session.posargs not in ([], ["--volumes"]):
        session.error(f"nox -s deploy-down takes --volumes or nothing, not {session.posargs}")
    # The daemon first, so that it launches no run container meanwhile (one launched after the
    # list below kept the network in use, and `down` failed); then the runs' containers: they
    # hold the warehouse volume, which `down --volumes` removes.
    compose(session, "stop", "daemon")
    runs = subprocess.run(
        ["docker", "ps", "--all", "--quiet", "--filter", f"label={DEPLOYMENT_LABEL}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    if runs:
        session.run("docker", "rm", "--force", *runs, external=True, silent=True)
    compose(session, "down", *session.posargs)


def compose(session: nox.Session, *args: str) -> None:
    """docker-compose (Debian's 1.29, or Docker's plugin) on deploy/compose/docker-compose.yaml."""
    command = ["docker-compose"] if shutil.which("docker-compose") else ["docker", "compose"]
    session.run(*command, "--project-name", "dbt-automation-demo",
                "--file", str(COMPOSE / "docker-compose.yaml"), *args,
                env=deployment_secrets(), external=True)  # fmt: skip


def deployment_secrets() -> dict[str, str]:
    """DAGSTER_PG_PASSWORD: the environment's, or one made at random on the first deploy-up and
    kept in deploy/compose/.env (gitignored), where docker-compose also finds it."""
    if "DAGSTER_PG_PASSWORD" in os.environ:
        return {}
    kept = COMPOSE / ".env"
    if not kept.exists():
        kept.touch(mode=0o600)
        kept.write_text(f"DAGSTER_PG_PASSWORD={secrets.token_urlsafe(24)}\n")
    return dict(line.split("=", 1) for line in kept.read_text().split())


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Benchmark against the stock alternatives (100-5,000 models); `-- --quick`, `-- --json F`."""
    install_locked(session)
    session.run("python", "-m", "bench", *session.posargs)


@nox.session(python=PYTHON, default=False)
def fuzz(session: nox.Session) -> None:
    """The policies against the README's model, and reuse against its rule, longer:
    `-- --examples N [--seed S]` (N sequences of each)."""
    install_locked(session)
    parser = argparse.ArgumentParser(prog="nox -s fuzz --")
    parser.add_argument("--examples", type=int, default=500, help="random sequences to run")
    parser.add_argument("--seed", type=int, default=random.randrange(2**32), help="to replay")
    args = parser.parse_args(session.posargs)
    session.log(
        f"seed {args.seed}; replay: nox -s fuzz -- --examples {args.examples} --seed {args.seed}"
    )
    session.run(
        "pytest",
        "tests/test_policy_interleavings.py",
        "tests/test_reuse_property.py",
        "-s",
        f"--hypothesis-seed={args.seed}",
        # pyproject's 20 minutes per test is for the suite; 500 sequences take about 25 here.
        "-o",
        f"faulthandler_timeout={max(1200, 6 * args.examples)}",
        env={
            "POLICY_FUZZ_EXAMPLES": str(args.examples),
            "REUSE_PROPERTY_EXAMPLES": str(args.examples),
        },
    )


@nox.session(python=PYTHON, default=False)
def library(session: nox.Session) -> None:
    """The README's "Use it in your project", run as written: the wheel, a fresh Dagster
    project with this lock's versions, `dg list components`, `dg scaffold defs`, `dg check defs`."""
    install_locked(session)
    session.run("pytest", "tests/test_library.py", "-m", "library", *session.posargs)


# What `nox -s stock` runs with `speedups: false`: every scenario module of the behaviour table
# (views, tables, the test gate and tests on several models, code versions, tags and selection,
# sensors, the schedule, the PostgreSQL outage), on SQLite, and the differential proof at
# length. The scenarios run on both storages in `nox -s tests`, with the speedups; what the
# switch changes (Dagster's built-in conditions, dagster-dbt's stock paths) reads and writes the
# instance through Dagster's own storage API alike on both (docs/guarantees.md).
STOCK_TESTS = (
    "tests/test_automation_views.py",
    "tests/test_automation_tables.py",
    "tests/test_test_gate.py",
    "tests/test_multi_model_tests.py",
    "tests/test_code_versions.py",
    "tests/test_source_observations.py",
    "tests/test_reuse.py",
    "tests/test_reuse_property.py",
    "tests/test_tags_and_selection.py",
    "tests/test_sensor_splitting.py",
    "tests/test_schedule.py",
    "tests/test_postgres_outage.py",
    "tests/test_differential.py",
)
STOCK_FUZZ = {"examples": 30, "seed": 20261130}


@nox.session(python=PYTHON, default=False)
def stock(session: nox.Session) -> None:
    """The pattern without the speedups (`speedups: false`: stock dagster-dbt paths, Dagster's
    built-in conditions): the scenario modules on SQLite, then a fixed-seed share of the random
    interleavings. Pass pytest arguments after -- to run other tests so."""
    install_locked(session)
    session.env["DBT_AUTOMATION_SPEEDUPS"] = "false"
    session.env["DIFFERENTIAL_EXAMPLES"] = "100"
    session.run(
        "pytest", *PARALLEL, *(session.posargs or ("--storage", "sqlite", *STOCK_TESTS)),
    )  # fmt: skip
    if not session.posargs:
        session.run(
            "pytest", "tests/test_policy_interleavings.py", "-s",
            f"--hypothesis-seed={STOCK_FUZZ['seed']}",
            env={"POLICY_FUZZ_EXAMPLES": str(STOCK_FUZZ["examples"])},
        )  # fmt: skip


@nox.session(python=PYTHON, default=False)
def land(session: nox.Session) -> None:
    """Land a batch of payments in the landing zone (`DBT_LANDING_ZONE`), as an EL tool does."""
    install_locked(session)
    session.run("python", "-m", "dbt_automation_demo.land", *session.posargs)


@nox.session(python=PYTHON, default=False)
def demo(session: nox.Session) -> None:
    """Replay the README's five walkthroughs on a simulated clock and print the timeline."""
    install_locked(session)
    session.run("python", "-m", "dbt_automation_demo.demo", *session.posargs)
