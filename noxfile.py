"""Task runner: every session installs the locked environment (`uv sync --frozen`) first.

`nox -l` lists the sessions; `nox` runs the default ones (lint, check, tests).
"""

import argparse
import glob
import os
import random
import shutil
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PYTHON = (ROOT / ".python-version").read_text().strip()
DAGSTER_HOME = ROOT / "dagster_home"
DUCKDB_PATH = ROOT / "analytics_dbt" / "data" / "analytics.duckdb"
LOCAL_DEFS_STATE = ROOT / "src" / "dbt_automation_demo" / "defs" / ".local_defs_state"

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lint", "check", "tests"]
nox.options.error_on_external_run = True
nox.options.reuse_venv = "yes"

# One set of defaults for every door into the project (nox, nix develop, the devcontainer).
PROJECT_ENV = {
    "DAGSTER_HOME": str(DAGSTER_HOME),
    "DBT_DUCKDB_PATH": str(DUCKDB_PATH),
    "UV_PYTHON_DOWNLOADS": "never",
}


def install_locked(session: nox.Session) -> None:
    """The exact packages of uv.lock (project and dev group) into this session's venv."""
    session.run_install(
        "uv",
        "sync",
        "--frozen",
        "--group",
        "dev",
        # Compiled once here: every dg, dbt and test process would otherwise recompile dagster
        # and dbt from source where bytecode is not written (PYTHONDONTWRITEBYTECODE, read-only).
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


def missing_test_prerequisites(
    path: str | None = None,
    postgres_servers: str = "/usr/lib/postgresql/*/bin/pg_ctl",
    chromium: str = os.environ.get("CHROMIUM", "/usr/bin/chromium"),  # as the browser test
) -> list[str]:
    """The system programs `nox -s tests` needs that this machine lacks, each with how to
    install it (Nix is optional: the two tests that use it are skipped without it)."""
    needed = {
        "a PostgreSQL server (initdb, pg_ctl): `sudo apt-get install postgresql` on "
        "Debian/Ubuntu, `brew install postgresql@16` on macOS": glob.glob(postgres_servers)
        or shutil.which("pg_ctl", path=path),
        f"Chromium, for the browser test (set CHROMIUM to its path if it is not {chromium}): "
        "`sudo apt-get install chromium` on Debian/Ubuntu, `brew install --cask chromium` on "
        "macOS": shutil.which(chromium, path=path),
        "curl, which a README command the tests run uses: `sudo apt-get install curl`": (
            shutil.which("curl", path=path)
        ),
    }
    return [what for what, found in needed.items() if not found]


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (real Dagster, dbt and DuckDB); pass pytest arguments after --."""
    missing = missing_test_prerequisites()
    if missing:
        session.error("nox -s tests needs:\n" + "\n".join(f"- {what}" for what in missing))
    install_locked(session)
    # Two workers; a file's tests stay on one worker (the live tests share one dev server). The
    # random interleavings take minutes: `nox -s fuzz` runs them (CI with a fixed seed).
    session.run(
        "pytest", "-n", "2", "--dist", "loadfile", "--durations=10",
        "-m", "not interleavings and not library", *session.posargs,
    )  # fmt: skip


@nox.session(python=PYTHON, default=False)
def container(session: nox.Session) -> None:
    """The Codespaces door in a real container (`devcontainer up`, then `nox -s check`, `demo`
    and `dev` inside) and the production image built and served (needs a Docker engine,
    mmdebstrap and Node.js)."""
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


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Benchmark against the stock alternatives (100-5,000 models); `-- --quick`, `-- --json F`."""
    install_locked(session)
    session.run("python", "-m", "bench", *session.posargs)


@nox.session(python=PYTHON, default=False)
def fuzz(session: nox.Session) -> None:
    """The policies against the README's model, longer: `-- --examples N [--seed S]`."""
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
        "-s",
        f"--hypothesis-seed={args.seed}",
        env={"POLICY_FUZZ_EXAMPLES": str(args.examples)},
    )


@nox.session(python=PYTHON, default=False)
def library(session: nox.Session) -> None:
    """The README's "Use it in your project", run as written: the wheel, a fresh Dagster
    project with this lock's versions, `dg list components`, `dg scaffold defs`, `dg check defs`."""
    install_locked(session)
    session.run("pytest", "tests/test_library.py", "-m", "library", *session.posargs)


# What `nox -s stock` runs with `speedups: false`: the automation scenarios (views, tables,
# the test gate, the schedule) on SQLite and PostgreSQL, and the differential proof at length.
STOCK_TESTS = (
    "tests/test_automation_views.py",
    "tests/test_automation_tables.py",
    "tests/test_test_gate.py",
    "tests/test_schedule.py",
    "tests/test_differential.py",
)
STOCK_FUZZ = {"examples": 30, "seed": 20261130}


@nox.session(python=PYTHON, default=False)
def stock(session: nox.Session) -> None:
    """The pattern without the speedups (`speedups: false`: stock dagster-dbt paths, Dagster's
    built-in conditions): the automation scenarios, then a fixed-seed share of the random
    interleavings. Pass pytest arguments after -- to run other tests so."""
    install_locked(session)
    session.env["DBT_AUTOMATION_SPEEDUPS"] = "false"
    session.env["DIFFERENTIAL_EXAMPLES"] = "100"
    session.run(
        "pytest", "-n", "2", "--dist", "loadfile", "--durations=5",
        *(session.posargs or STOCK_TESTS),
    )  # fmt: skip
    if not session.posargs:
        session.run(
            "pytest", "tests/test_policy_interleavings.py", "-s",
            f"--hypothesis-seed={STOCK_FUZZ['seed']}",
            env={"POLICY_FUZZ_EXAMPLES": str(STOCK_FUZZ["examples"])},
        )  # fmt: skip


@nox.session(python=PYTHON, default=False)
def demo(session: nox.Session) -> None:
    """Replay the README's three walkthroughs on a simulated clock and print the timeline."""
    install_locked(session)
    session.run("python", "-m", "dbt_automation_demo.demo", *session.posargs)
