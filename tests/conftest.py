import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from filelock import FileLock
from xdist.scheduler import LoadScopeScheduling

import preloaded_dbt
from harness import (
    DEPLOY_INSTANCE_CONFIG,
    REPO_ROOT,
    STORAGES,
    build_everything,
    copy_dbt_project,
    parse,
    sqlite_instance,
    temporary_files_in_memory,
)
from postgres_server import PostgresServer

pytest_plugins = ["time_profile"]  # every test timed: wall, CPU and waiting (docs/ci-time.md)

# A fixed simulated date, later than any real materialization the tests record.
SIMULATED_DAY = datetime(2031, 3, 4, tzinfo=UTC)
# dbt reuses a parse (partial parsing) only while the profile is unchanged, and the DuckDB
# path is part of the profile: given relative to the dbt project, it is the same string in
# every test, so no test's first dbt run parses the project again (about 4 s each).
WAREHOUSE_BESIDE_PROJECT = "../warehouse/analytics.duckdb"
BEFORE_DAILY_TICK = SIMULATED_DAY.replace(hour=5, minute=0)
# Mid-morning: today's 06:00 tick is behind the clock, tomorrow's far ahead.
AFTER_DAILY_TICK = SIMULATED_DAY.replace(hour=9, minute=0)


@pytest.fixture(autouse=True)
def landing_zone_of_the_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each copy of the dbt project reads its own landing zone (the source's default, relative to
    the project), never the checkout's that `nox -s` points DBT_LANDING_ZONE at."""
    monkeypatch.delenv("DBT_LANDING_ZONE", raising=False)


@pytest.fixture
def duckdb_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh DuckDB file (not yet created) that dbt and the component will write."""
    path = tmp_path / "warehouse" / "analytics.duckdb"
    monkeypatch.setenv("DBT_DUCKDB_PATH", str(path))
    return path


@pytest.fixture(scope="session")
def parsed_dbt_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped dbt project, parsed once per test session (its manifest is read-only)."""
    project_dir = copy_dbt_project(tmp_path_factory.mktemp("parsed") / "analytics_dbt")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DBT_DUCKDB_PATH", WAREHOUSE_BESIDE_PROJECT)
        parse(project_dir)
    return project_dir


@pytest.fixture
def dbt_project(
    tmp_path: Path,
    duckdb_file: Path,
    parsed_dbt_project: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """A copy of the shipped dbt project, with its manifest, that a test may edit; dbt finds
    `duckdb_file` beside it, named as in the parse, so dbt's partial parse stays valid."""
    project_dir = copy_dbt_project(
        tmp_path / "analytics_dbt", source=parsed_dbt_project, keep_manifest=True
    )
    assert (project_dir / WAREHOUSE_BESIDE_PROJECT).resolve() == duckdb_file.resolve()
    monkeypatch.setenv("DBT_DUCKDB_PATH", WAREHOUSE_BESIDE_PROJECT)
    return project_dir


def pytest_configure(config: pytest.Config) -> None:
    temporary_files_in_memory()  # before pytest's tmp_path and the xdist workers start


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--storage",
        action="append",
        choices=STORAGES,
        help="run the both_storages tests on this instance storage only (repeatable; default: "
        "every storage). `nox -s stock` runs them on SQLite: docs/guarantees.md says why.",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked `both_storages` that use an instance run once per instance storage."""
    if metafunc.definition.get_closest_marker("both_storages") and (
        {"instance", "built_instance"} & set(metafunc.fixturenames)
    ):
        storages = metafunc.config.getoption("storage") or STORAGES
        metafunc.parametrize("storage", storages, indirect=True)


class ByFileAndStorage(LoadScopeScheduling):
    """`--dist loadscope` here: the tests of one file on one instance storage run on one worker,
    in order, and share what it built once for them (a module's dev server, the built instance).

    (xdist's `loadgroup` would group by marks, but with pytest 9.2 it groups nothing: it renames
    `item._nodeid`, which pytest no longer reads.)
    """

    def _split_scope(self, nodeid: str) -> str:
        file, _, test = nodeid.partition("::")
        if Path(file).name in EACH_TEST_APART:
            return nodeid
        parameters = re.search(r"\[(.*)\]$", test)
        storage = set(parameters.group(1).split("-")) & set(STORAGES) if parameters else set()
        return file + "".join(f"[{name}]" for name in sorted(storage))


# The files whose tests take longest, most of it waiting (dev servers, sensor ticks, the run
# queue; docs/ci-time.md): collected first, so that with `--no-loadscope-reorder` their workers
# start them first and the other workers compute meanwhile.
LONGEST_FIRST = (
    "test_live_dev_server.py",
    "test_duckdb_writer_faults.py",
    "test_differential.py",
    "test_nox_sessions.py",
    "test_live_dev_server_stop.py",
    "test_postgres_outage.py",
)
# Files whose tests share nothing and each take minutes in `nox -s stock`: a worker per test.
EACH_TEST_APART = ("test_differential.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def longest_first(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=longest_first)  # stable: each file keeps its order


def pytest_xdist_make_scheduler(config: pytest.Config, log) -> LoadScopeScheduling | None:
    if config.getoption("dist") == "loadscope":
        return ByFileAndStorage(config, log)
    return None


@pytest.fixture
def storage(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture(scope="session")
def preloaded_dbt_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This test worker's preloaded dbt server: the folder of its `dbt` client."""
    with preloaded_dbt.running(tmp_path_factory.mktemp("preloaded-dbt")) as client_dir:
        yield client_dir


@pytest.fixture
def dbt_from_a_preloaded_process(
    preloaded_dbt_client: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test's `dbt` commands run as forks of a process that has imported dbt
    (tests/preloaded_dbt.py says why, and which tests keep the real `dbt`)."""
    monkeypatch.setenv("PATH", f"{preloaded_dbt_client}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server of this test worker's own, on loopback."""
    with PostgresServer.running() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A new, empty database on the test PostgreSQL server, as DAGSTER_PG_URL gives it."""
    database = postgres_server.create_database()
    yield postgres_server.url(database)
    postgres_server.drop_database(database)


@contextmanager
def open_instance(storage: str, home: Path, database_url: str | None) -> Iterator:
    """A real Dagster instance in `home`: SQLite as `nox -s dev` uses, or PostgreSQL through
    the shipped deploy/dagster.yaml (with DAGSTER_PG_URL), as a deployment uses."""
    if storage == "sqlite":
        with sqlite_instance(home) as instance:
            yield instance
        return
    shutil.copy(DEPLOY_INSTANCE_CONFIG, home / "dagster.yaml")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DAGSTER_PG_URL", database_url)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            yield instance


@pytest.fixture
def instance(tmp_path: Path, storage: str, request: pytest.FixtureRequest):
    """A fresh instance on a temporary DAGSTER_HOME (and its own PostgreSQL database)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    url = request.getfixturevalue("postgres_url") if storage == "postgres" else None
    with open_instance(storage, home, url) as instance:
        yield instance


@dataclass
class BuiltTemplate:
    """Every shipped asset built by one real run, kept to be copied: the DuckDB file's folder,
    the instance's DAGSTER_HOME, and its PostgreSQL database (None on SQLite)."""

    warehouse: Path
    home: Path
    database: str | None


@pytest.fixture(scope="session")
def built_templates(
    tmp_path_factory: pytest.TempPathFactory,
    parsed_dbt_project: Path,
    request: pytest.FixtureRequest,
) -> Callable[[str], BuiltTemplate]:
    """Per instance storage, built on first use by this worker: `build_everything` on a copy
    of the shipped project, with the sensor's cursors for both of the tests' clocks."""
    built: dict[str, BuiltTemplate] = {}

    def template_for(storage: str) -> BuiltTemplate:
        if storage not in built:
            folder = tmp_path_factory.mktemp(f"built-{storage}")
            project = copy_dbt_project(
                folder / "analytics_dbt", source=parsed_dbt_project, keep_manifest=True
            )
            template = BuiltTemplate(folder / "warehouse", folder / "dagster_home", None)
            template.home.mkdir()
            url = None
            if storage == "postgres":
                server = request.getfixturevalue("postgres_server")
                template.database = server.create_database()
                url = server.url(template.database)
            with pytest.MonkeyPatch.context() as env:
                env.setenv("DBT_DUCKDB_PATH", WAREHOUSE_BESIDE_PROJECT)
                with open_instance(storage, template.home, url) as instance:
                    build_everything(project, instance, [BEFORE_DAILY_TICK, AFTER_DAILY_TICK])
            built[storage] = template
        return built[storage]

    return template_for


@pytest.fixture
def built_instance(
    tmp_path: Path,
    storage: str,
    duckdb_file: Path,
    built_templates: Callable[[str], BuiltTemplate],
    request: pytest.FixtureRequest,
):
    """An instance and a DuckDB file in which every shipped asset has been built by one real
    run, and the sensor evaluated before and after it: a copy of this worker's template.

    `ready()` on it starts where the template left off, instead of building again.
    """
    template = built_templates(storage)
    shutil.copytree(template.warehouse, duckdb_file.parent)
    home = tmp_path / "dagster_home"
    url = database = None
    if storage == "sqlite":
        shutil.copytree(template.home, home)
    else:
        home.mkdir()
        server = request.getfixturevalue("postgres_server")
        database = server.create_database(template=template.database)
        url = server.url(database)
    with open_instance(storage, home, url) as instance:
        # The copy holds the template's run (and cursors): `ready()` on it builds nothing again.
        assert instance.get_run_records(limit=1), f"the copy of the built instance is empty: {home}"
        yield instance
    if database:
        server.drop_database(database)


@pytest.fixture
def before_daily_tick() -> datetime:
    return BEFORE_DAILY_TICK


@pytest.fixture
def after_daily_tick() -> datetime:
    return AFTER_DAILY_TICK


@pytest.fixture(scope="session")
def shipped_defs(tmp_path_factory: pytest.TempPathFactory) -> dg.Definitions:
    """The project's own definitions, loaded as `dg` loads them, from freshly refreshed state."""
    # One folder for this session's xdist workers (each has its own basetemp below it), or
    # this session's own: never one that outlives the session, whose state could be stale.
    basetemp = tmp_path_factory.getbasetemp()
    shared = basetemp.parent if os.environ.get("PYTEST_XDIST_WORKER") else basetemp
    with FileLock(shared / "refresh-defs-state.lock"):
        marker = shared / "refresh-defs-state.done"
        if not marker.exists():
            subprocess.run(["dg", "utils", "refresh-defs-state"], cwd=REPO_ROOT, check=True)
            marker.touch()
    from dbt_automation_demo.definitions import defs

    return defs()
