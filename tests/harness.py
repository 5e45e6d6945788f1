"""Test helpers: the replay tools of the package, plus copies of the shipped project."""

import asyncio
import atexit
import csv
import functools
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import dagster as dg
import duckdb
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationPlanned,
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.definitions.automation_tick_evaluation_context import build_run_requests
from dagster._core.definitions.declarative_automation.automation_condition_tester import (
    EvaluateAutomationConditionsResult,
)
from dagster._core.definitions.freshness import FreshnessState
from dagster._core.definitions.freshness_evaluator import FRESHNESS_EVALUATORS_BY_POLICY_TYPE
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.events import (
    AssetMaterializationPlannedData,
    DagsterEvent,
    DagsterEventType,
)
from dagster._core.execution.api import create_execution_plan, execute_run_iterator
from dagster._core.snap import snapshot_from_execution_plan
from dagster._core.test_utils import freeze_time
from packaging.specifiers import SpecifierSet

from dbt_automation_demo import replay
from dbt_automation_demo.components.source_observations import (
    HAS_DATA_CHECK,
    observation_job_name,
)
from dbt_automation_demo.replay import (  # noqa: F401  (re-exported for the tests)
    Ticker,
    build_defs,
    end_run,
    keys,
    materialize,
    names,
    parse,
    project_env,
    record_run,
    reload_defs,
    start_run,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_DBT_PROJECT = REPO_ROOT / "analytics_dbt"
DEPLOY_INSTANCE_CONFIG = REPO_ROOT / "deploy" / "dagster.yaml"
# Instance storages the tests run on: SQLite (`nox -s dev`) and PostgreSQL (deploy/dagster.yaml).
STORAGES = ("sqlite", "postgres")

SEEDS = {"raw_customers", "raw_orders"}
VIEWS = {"stg_customers", "stg_orders"}  # the views over seeds
SOURCES = {"landing/payments"}  # observed, never materialized
VIEWS_OVER_SOURCES = {"stg_payments"}
EVERY_VIEW = VIEWS | VIEWS_OVER_SOURCES
TABLES = {"customer_orders", "customer_segments", "order_summary"}
ALL_ASSETS = SEEDS | VIEWS | VIEWS_OVER_SOURCES | TABLES  # every asset Dagster materializes
# What a daily tick requests: every asset but the views over sources, which follow observations.
DAILY_TICK = SEEDS | VIEWS | TABLES
# The marts' row counts after a whole build of the shipped seeds.
WHOLE_MARTS = {"customer_orders": 100, "customer_segments": 100, "order_summary": 12}
EDGES = {  # (parent, child): the designed lineage
    ("raw_customers", "stg_customers"),
    ("raw_orders", "stg_orders"),
    ("landing/payments", "stg_payments"),
    ("stg_customers", "customer_orders"),
    ("stg_orders", "customer_orders"),
    ("customer_orders", "customer_segments"),
    ("stg_orders", "order_summary"),
}
# `ready()` leaves the ticker two evaluations, a minute apart, after the clock it was given.
TICK = timedelta(minutes=1)
TICKS_IN_READY = 2


# The random sequences' instances, and the empty ones new instances are copied from: in memory
# where the machine has a tmpfs.
SCRATCH_DIR = "/dev/shm" if Path("/dev/shm").is_dir() else None
# Every other temporary file of a test session (pytest's tmp_path, `tempfile`'s, those of the
# processes the tests start) in memory too, where the tmpfs has room and TMPDIR names no other
# place: the tests write and delete many files (copies of the projects, their DuckDB files,
# SQLite instances that sync each commit), which a disk makes wait (docs/ci-time.md).
MEMORY_TMPDIR = Path("/dev/shm") / f"dbt-automation-demo-tests-{os.getuid()}"
MEMORY_TMPDIR_ROOM = 4 * 2**30


def temporary_files_in_memory() -> None:
    """Point TMPDIR at `MEMORY_TMPDIR` unless it is set or the tmpfs lacks room."""
    if "TMPDIR" in os.environ or not MEMORY_TMPDIR.parent.is_dir():
        return
    if shutil.disk_usage(MEMORY_TMPDIR.parent).free < MEMORY_TMPDIR_ROOM:
        return
    MEMORY_TMPDIR.mkdir(mode=0o755, exist_ok=True)  # PostgreSQL's user enters its folder here
    if MEMORY_TMPDIR.is_symlink() or MEMORY_TMPDIR.stat().st_uid != os.getuid():
        return  # another user's: not a place for this user's files
    os.environ["TMPDIR"] = str(MEMORY_TMPDIR)  # inherited by the xdist workers and subprocesses
    tempfile.tempdir = None  # `tempfile` reads TMPDIR again


CONSOLIDATED_EVENT_LOG = {
    "module": "dagster._core.storage.event_log",
    "class": "ConsolidatedSqliteEventLogStorage",
}


@contextmanager
def sqlite_instance(home: Path, consolidated: bool = False) -> Iterator[dg.DagsterInstance]:
    """The real SQLite instance in `home`, with Dagster's default storages, or with its event
    log in one database (`consolidated`); a new, empty one where `home` holds none yet. A new
    one's files are copies of an empty one made once per process: a new SQLite instance stamps
    each of its databases with Dagster's migrations, reading every migration script (0.4 s
    each time here)."""
    if not (home / "history").exists():
        shutil.copytree(_empty_sqlite_home(consolidated), home, dirs_exist_ok=True)
    with _open_sqlite_instance(home, consolidated) as instance:
        yield instance


@functools.cache
def _empty_sqlite_home(consolidated: bool) -> Path:
    home = Path(tempfile.mkdtemp(dir=SCRATCH_DIR))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    with _open_sqlite_instance(home, consolidated):
        pass
    return home


@contextmanager
def _open_sqlite_instance(home: Path, consolidated: bool) -> Iterator[dg.DagsterInstance]:
    event_log = {**CONSOLIDATED_EVENT_LOG, "config": {"base_dir": str(home / "history")}}
    overrides = {"event_log_storage": event_log} if consolidated else {}
    with dg.instance_for_test(temp_dir=str(home), overrides=overrides) as instance:
        yield instance


@contextmanager
def scratch_instance() -> Iterator[dg.DagsterInstance]:
    """An instance for one of the thousands of random sequences: in memory where there is a
    tmpfs (no disk sync per event), its event log in one database, as PostgreSQL keeps one
    table (Dagster's SQLite default opens and migrates a database per run: 0.13 s a run here).
    Both read and write through the same storage API; the scenario tests use the defaults of
    `nox -s dev` and of the deployment."""
    with (
        tempfile.TemporaryDirectory(dir=SCRATCH_DIR) as home,
        sqlite_instance(Path(home), consolidated=True) as instance,
    ):
        yield instance


# The implicit asset job, whose runs the recorded runs stand for.
ASSET_JOB = "__ASSET_JOB"


def report_event(
    instance: dg.DagsterInstance, run: dg.DagsterRun, event: DagsterEventType, data=None
) -> None:
    """An event of the run, recorded in the instance as the run's own process records it."""
    instance.report_dagster_event(
        DagsterEvent(event_type_value=event.value, job_name=run.job_name, event_specific_data=data),
        run_id=run.run_id,
    )


def start_recorded_run(
    instance: dg.DagsterInstance,
    targets: list[str],
    checks: Iterable[dg.AssetCheckKey] = (),
) -> dg.DagsterRun:
    """A run of the asset job for `targets` and `checks`, recorded as a launched one is: its
    asset and check selections (what `any_deps_updated()` reads) and its planned
    materializations and checks (what `in_progress()` reads), without running anything."""
    checks = frozenset(checks)
    run = instance.add_run(
        dg.DagsterRun(
            job_name=ASSET_JOB,
            status=dg.DagsterRunStatus.STARTED,
            asset_selection=frozenset(dg.AssetKey(name) for name in targets),
            asset_check_selection=checks,
        )
    )
    for name in targets:
        planned = AssetMaterializationPlannedData(dg.AssetKey(name))
        report_event(instance, run, DagsterEventType.ASSET_MATERIALIZATION_PLANNED, planned)
    for key in sorted(checks):
        planned = AssetCheckEvaluationPlanned(asset_key=key.asset_key, check_name=key.name)
        report_event(instance, run, DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED, planned)
    return run


def report_check_result(
    instance: dg.DagsterInstance, run: dg.DagsterRun, key: dg.AssetCheckKey, passed: bool
) -> None:
    """The check's result in the run, on its asset's latest materialization, as a run records
    it."""
    latest = instance.fetch_materializations(key.asset_key, limit=1).records
    target = next(
        (
            AssetCheckEvaluationTargetMaterializationData(
                storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
            )
            for record in latest
        ),
        None,
    )
    evaluation = dg.AssetCheckEvaluation(
        asset_key=key.asset_key,
        check_name=key.name,
        passed=passed,
        target_materialization_data=target,
    )
    report_event(instance, run, DagsterEventType.ASSET_CHECK_EVALUATION, evaluation)


def the_sensors_run_requests(ticker: Ticker) -> list[dg.RunRequest]:
    """The runs the automation sensor launches for the ticker's last evaluation."""
    (sensor,) = ticker.defs.sensors
    return build_run_requests(
        ticker.last_evaluation._requested_subsets,
        ticker.defs.resolve_asset_graph(),
        run_tags=None,
        emit_backfills=sensor.emit_backfills,
    )


def land_orders_of_an_unknown_customer(project_dir: Path) -> None:
    """The shipped orders in the project's seed, the first one placed by customer 99999, who
    does not exist: stg_orders' `relationships` test to stg_customers fails on them."""
    orders = project_dir / "seeds" / "raw_orders.csv"
    with (SHIPPED_DBT_PROJECT / "seeds" / "raw_orders.csv").open(newline="") as file:
        header, first, *rest = csv.reader(file)
    first[header.index("customer_id")] = "99999"
    with orders.open("w", newline="") as file:
        csv.writer(file).writerows([header, first, *rest])


def checks_requested(ticker: Ticker) -> set[str]:
    """The checks the ticker's last evaluation requested through their own automation
    condition, as `asset name:check name`."""
    return checks_requested_by(ticker.last_evaluation)


def checks_requested_by(evaluation: EvaluateAutomationConditionsResult) -> set[str]:
    """The checks an evaluation requested through their own automation condition, as
    `asset name:check name`."""
    return {
        check_name(subset.key)
        for subset in evaluation._requested_subsets
        if isinstance(subset.key, dg.AssetCheckKey) and not subset.is_empty
    }


def check_name(key: dg.AssetCheckKey) -> str:
    """A check as the tests and the reference model name it: `asset name:check name`."""
    return f"{key.asset_key.to_user_string()}:{key.name}"


def launch(defs: dg.Definitions, instance: dg.DagsterInstance, request: dg.RunRequest) -> list[str]:
    """A real run of a sensor's run request, its assets and exactly its checks, as the run
    launcher runs it: what the run did, in order ("built X", "CHECK passed/failed")."""
    assets = frozenset(request.asset_selection or ())
    checks = None if request.asset_check_keys is None else frozenset(request.asset_check_keys)
    job = (
        defs.resolve_implicit_global_asset_job_def()
        .as_ephemeral_job(resource_defs={}, input_values={})  # in this process
        .get_subset(asset_selection=assets, asset_check_selection=checks)
    )
    # As the run launcher records it: `create_run_for_job` would drop the check selection.
    plan = create_execution_plan(job)
    run = instance.create_run(
        job_name=job.name,
        run_id=None,
        run_config=None,
        op_selection=None,
        asset_selection=assets,
        asset_check_selection=checks,
        resolved_op_selection=None,
        step_keys_to_execute=plan.step_keys_to_execute,
        status=None,
        tags=None,
        root_run_id=None,
        parent_run_id=None,
        job_snapshot=job.get_job_snapshot(),
        execution_plan_snapshot=snapshot_from_execution_plan(plan, job.get_job_snapshot_id()),
        parent_job_snapshot=job.get_parent_job_snapshot(),
        remote_job_origin=None,
        job_code_origin=None,
        asset_graph=job.asset_layer.asset_graph,
    )
    return what_the_run_did(execute_run_iterator(InMemoryJob(job), run, instance))


def what_the_run_did(events: Iterable[DagsterEvent]) -> list[str]:
    """A run's materializations ("built X") and check results ("CHECK passed"), in order."""
    done = []
    for event in events:
        if event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            done.append(f"built {event.asset_key.to_user_string()}")
        elif event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            done.append(f"{evaluation.check_name} {'passed' if evaluation.passed else 'failed'}")
    return done


@contextmanager
def run_paused_in_its_step(
    defs: dg.Definitions, instance: dg.DagsterInstance, asset_names: Iterable[str]
) -> Iterator[dg.DagsterRun]:
    """A real run of the named assets, as `materialize` runs them, paused once its step has
    started and before dbt does: what the block does happens during the run. The run then
    goes on to its end."""
    selection = frozenset(keys(*asset_names))
    job = defs.resolve_implicit_global_asset_job_def().as_ephemeral_job(
        resource_defs={}, input_values={}, op_selection=None, asset_selection=selection
    )
    run = instance.create_run_for_job(job_def=job, asset_selection=selection)
    events = execute_run_iterator(InMemoryJob(job), run, instance)
    next(event for event in events if event.event_type == DagsterEventType.STEP_START)
    yield run
    for _ in events:
        pass


def mart_rows(duckdb_file: Path) -> dict[str, int]:
    """Row counts of the marts, read as a person would once no run writes the file."""
    with duckdb.connect(str(duckdb_file), read_only=True) as con:
        return {
            table: con.execute(f"select count(*) from {table}").fetchone()[0]
            for table in WHOLE_MARTS
        }


# The README and the pages it links to, whose marked blocks the tests run as written.
DOCUMENTS = (REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md")))


@functools.cache
def load_noxfile() -> ModuleType:
    """The noxfile as a module, loaded once (nox registers its sessions again at each load)."""
    spec = importlib.util.spec_from_file_location("noxfile", REPO_ROOT / "noxfile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def supported_pythons() -> list[str]:
    """Every 3.x that pyproject's requires-python admits; the first is the one the doors that
    bring their own Python (the flake, the devcontainer, the images) bring."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    admitted = SpecifierSet(pyproject["project"]["requires-python"])
    return [f"3.{minor}" for minor in range(30) if f"3.{minor}.0" in admitted]


def readme_block(name: str) -> str:
    """The code block the README or a docs/ page marks `<!-- name -->` (once, in one of them):
    what a test runs or loads as written."""
    found = [
        match.group(1)
        for document in DOCUMENTS
        for match in re.finditer(
            rf"<!-- {name} -->\n```\w*\n(.*?)```\n<!-- /{name} -->", document.read_text(), re.S
        )
    ]
    assert len(found) == 1, f"{len(found)} blocks marked {name} in the README and docs/"
    return found[0]


def copy_dbt_project(
    destination: Path, source: Path = SHIPPED_DBT_PROJECT, keep_manifest: bool = False
) -> Path:
    """Copy a dbt project without its run artifacts (a parsed copy may keep its manifest)."""
    return replay.copy_dbt_project(source, destination, keep_manifest=keep_manifest)


def ready(project_dir: Path, instance: dg.DagsterInstance, now: datetime) -> tuple:
    """Definitions, and a ticker that evaluated once before and once after a full real run.

    An instance copied from a built template (conftest's `built_instance`) already holds that
    run and the ticker's cursor at `now`; any other instance gets them here.
    """
    if not instance.run_storage.get_cursor_values({_cursor_key(now)}):
        build_everything(project_dir, instance, [now])
    defs = build_defs(project_dir)
    ticker = Ticker(defs, instance, now + TICKS_IN_READY * TICK)
    ticker.cursor = dg.deserialize_value(
        instance.run_storage.get_cursor_values({_cursor_key(now)})[_cursor_key(now)]
    )
    return defs, ticker


def build_everything(project_dir: Path, instance: dg.DagsterInstance, clocks: list[datetime]):
    """One real run of every asset, the sensor evaluated just before and just after it on each
    clock; each clock's cursor is kept in the instance, where the daemon keeps a sensor's."""
    defs = build_defs(project_dir)
    tickers = {now: Ticker(defs, instance, now) for now in clocks}
    for ticker in tickers.values():
        assert ticker.tick(TICK) == set()  # nothing exists: views wait for seeds, the rest for cron
    materialize(defs, instance, ALL_ASSETS)
    for ticker in tickers.values():
        assert ticker.tick(TICK) == set()  # one run built everything: nothing is left to do
    instance.run_storage.set_cursor_values(
        {_cursor_key(now): dg.serialize_value(ticker.cursor) for now, ticker in tickers.items()}
    )


def _cursor_key(now: datetime) -> str:
    return f"tests.automation_cursor.ready_at.{now.isoformat()}"


def sql_file(project_dir: Path, model: str) -> Path:
    return next(project_dir.glob(f"models/**/{model}.sql"))


def edit_sql(project_dir: Path, model: str, new_sql: str) -> None:
    sql_file(project_dir, model).write_text(new_sql)


def edit_logic(project_dir: Path, model: str) -> None:
    """The smallest edit of a model's logic (a comment would not do: it is not logic), which
    changes its code version and compiles to the same SQL."""
    path = sql_file(project_dir, model)
    path.write_text(path.read_text() + NEUTRAL_EDIT)


# Jinja that renders nothing: code, where a comment is not.
NEUTRAL_EDIT = "{% set edited = true %}\n"


# What a nox session or these tests add to the environment, which a new shell does not have.
SESSION_VARIABLES = {
    "VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH", "UV_PYTHON", "UV_PROJECT_ENVIRONMENT",
    "DAGSTER_HOME", "DBT_DUCKDB_PATH", "DBT_LANDING_ZONE", "DBT_AUTOMATION_SPEEDUPS",
}  # fmt: skip


def in_a_quick_start_shell(script: str, cwd: Path, **variables: str) -> subprocess.CompletedProcess:
    """`script` run by bash in a shell that has only what the quick start gave it: its tools (uv
    and nox: `.tools/bin`, or the door's own) and the system's commands; no venv active, none of
    the sessions' variables (the machine's others, its certificates say, are kept). A README
    command the quick start does not provide fails there with "command not found"."""
    tools = Path(shutil.which("uv")).parent
    assert not (tools / "dg").exists(), f"{tools} holds dg: not the quick start's tools"
    env = {name: value for name, value in os.environ.items() if name not in SESSION_VARIABLES}
    env["PATH"] = os.pathsep.join([str(tools), "/usr/local/bin", "/usr/bin", "/bin"])
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd, env={**env, **variables}, capture_output=True, text=True,
    )  # fmt: skip


def dg_in(project: Path, *args: str) -> subprocess.CompletedProcess:
    """`dg ARGS` in a `copy_dagster_project()` copy, as a person runs it there."""
    return subprocess.run(
        ["dg", *args], cwd=project, env=project_env(project), capture_output=True, text=True
    )


def copy_dagster_project(destination: Path) -> Path:
    """This checkout's whole project in a folder of its own (see `replay.copy_dagster_project`)."""
    return replay.copy_dagster_project(REPO_ROOT, destination)


_recordings: list[list[list[str]]] = []


def _record_started_command(event: str, args: tuple) -> None:
    if event == "subprocess.Popen" and _recordings:
        executable, *arguments = args[1]
        _recordings[-1].append([os.path.basename(str(executable)), *map(str, arguments)])


# An audit hook cannot be removed; it records only inside `started_commands()`.
sys.addaudithook(_record_started_command)


@contextmanager
def started_commands() -> Iterator[list[list[str]]]:
    """The command lines (program name first) of the processes started in the block."""
    _recordings.append([])
    try:
        yield _recordings[-1]
    finally:
        _recordings.pop()


SOURCES_YML = """
version: 2
sources:
  - name: shop
    schema: main
    tables:
      - name: external_refunds
"""
REFUNDS_SQL = "select count(*) as refund_count from {{ source('shop', 'external_refunds') }}\n"


# A landing zone read through dbt sources (dbt-duckdb's `external_location`): `payments` sets
# `loaded_at_field` and a freshness (observed through `dbt source freshness`), `refunds` neither
# (observed by its files); a view over each (the shipped stg_payments, and stg_refunds).
LANDING_SOURCES_YML = """
version: 2
sources:
  - name: landing
    tables:
      - name: payments
        config:
          loaded_at_field: loaded_at
          freshness:
            warn_after: {count: 1, period: hour}
            error_after: {count: 1, period: day}
          meta:
            external_location: "read_csv('landing/payments/*.csv', union_by_name = true)"
      - name: refunds
        config:
          meta:
            external_location: "landing/refunds/*.csv"
"""
VIEWS_OVER_THE_LANDING_ZONE = {  # beside the shipped stg_payments
    "stg_refunds": "select order_id from {{ source('landing', 'refunds') }}\n",
}


def add_a_landing_zone(project: Path) -> Path:
    """Two sources over an empty landing folder, and a view over each, in the dbt project (in
    place of the shipped landing zone and its first batch; the shipped stg_payments stays)."""
    shutil.rmtree(project / "landing")
    (project / "models" / "staging" / "sources.yml").write_text(LANDING_SOURCES_YML)
    for name, sql in VIEWS_OVER_THE_LANDING_ZONE.items():
        (project / "models" / "staging" / f"{name}.sql").write_text(sql)
    for table in ("payments", "refunds"):
        (project / "landing" / table).mkdir(parents=True)
    return project


def land(project: Path, table: str, batch: int, loaded_at: datetime | None = None) -> None:
    """A batch of one row lands in the table's folder, as an EL tool drops a file (stamped
    `loaded_at`, by default a minute per batch after a fixed time)."""
    loaded_at = loaded_at or datetime(2031, 3, 4, 10, batch, tzinfo=UTC)
    header, row = {
        "payments": (
            "payment_id,order_id,amount_cents,loaded_at",
            f"{batch},{batch},{batch}50,{loaded_at:%F %T}",
        ),
        "refunds": ("order_id", f"{batch}"),
    }[table]
    (project / "landing" / table / f"batch_{batch}.csv").write_text(f"{header}\n{row}\n")


# The job that observes the dbt sources, as its schedule launches it (the dbt project's name).
OBSERVE_JOB = observation_job_name("analytics_dbt")


def observe(defs: dg.Definitions, instance: dg.DagsterInstance) -> dict[str, str | None]:
    """One run of the source observation job (it succeeds): each source -> None if it had
    data, otherwise why not (what its failed `dbt_source_has_data` check says)."""
    result = defs.resolve_job_def(OBSERVE_JOB).execute_in_process(instance=instance)
    return {
        check.asset_key.to_user_string(): None if check.passed else check.metadata["why not"].value
        for check in result.get_asset_check_evaluations()
        if check.check_name == HAS_DATA_CHECK
    }


def project_over_a_dbt_source(destination: Path, duckdb_file: Path) -> Path:
    """The shipped dbt project, parsed, plus a table `refund_totals` over a dbt source that
    only exists in the DuckDB file (Dagster observes a source, never materializes it)."""
    project = copy_dbt_project(destination)
    (project / "models" / "sources.yml").write_text(SOURCES_YML)
    (project / "models" / "marts" / "refund_totals.sql").write_text(REFUNDS_SQL)
    parse(project)
    duckdb_file.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(duckdb_file)) as con:
        con.execute("create table external_refunds as select 1 as refund_id")
    return project


def sensor_tick(
    repository: dg.RepositoryDefinition,
    sensor: dg.SensorDefinition,
    instance: dg.DagsterInstance,
    cursor: str | None,
    at: datetime,
):
    """One tick of the sensor at a time, as the daemon's code server evaluates it (its run
    requests, its new cursor, the evaluations it stores)."""
    with freeze_time(at):
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor, repository_def=repository
        )
        return sensor.evaluate_tick(context)


def freshness(defs, instance, asset: str, at: datetime) -> FreshnessState:
    """The asset's freshness at a time, as Dagster's freshness daemon evaluates it."""
    with freeze_time(at):
        view = AssetGraphView.for_test(defs, instance)
        node = view.asset_graph.get(dg.AssetKey(asset))
        if node.freshness_policy is None:
            return FreshnessState.NOT_APPLICABLE
        evaluator = FRESHNESS_EVALUATORS_BY_POLICY_TYPE[type(node.freshness_policy)]()
        return asyncio.run(evaluator.evaluate_freshness(context=view, node=node))


def node_names(ticker, asset: str) -> list[str]:
    """Every node's name and label in the asset's latest evaluation (what the UI shows: a
    tick that carried it forward stored none), depth first."""
    found, pending = [], [ticker.evaluated[dg.AssetKey(asset)]]
    while pending:
        node = pending.pop()
        found += [node.condition.name, node.condition.get_label() or ""]
        pending.extend(node.child_results)
    return found
