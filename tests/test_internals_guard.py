"""Guards of the fenced layer: every private name of dagster, dagster-dbt, dbt or DuckDB that
`src/` uses is still there, with the shape our code relies on, and none is used outside
`dbt_automation_demo.internals`, the tie-safe `since` (`dbt_automation_demo/conditions.py`) and
reuse (`dbt_automation_demo/reuse.py`).

A release that renames, moves or reshapes one fails `test_private_name_is_still_there` for that
name, with a message naming it, what relies on it and where to look (docs/internals.md), before
any slower scenario fails. docs/internals.md's table lists exactly these names.
"""

import ast
import functools
import hashlib
import importlib
import importlib.metadata
import inspect
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import REPO_ROOT

SRC = REPO_ROOT / "src" / "dbt_automation_demo"
FENCED = (SRC / "internals", SRC / "conditions.py", SRC / "reuse.py")
INTERNALS_DOC = REPO_ROOT / "docs" / "internals.md"


@dataclass(frozen=True)
class Private:
    """A private name: `module:Attr.attr` (`Class()` reads an attribute of a new instance)."""

    path: str
    used_by: str
    # The parameters our code passes or receives, in order; None: not a callable we call.
    params: tuple[str, ...] | None = None
    # What our code needs it to be, when more than "it exists".
    kind: type | None = None
    # An attribute of each instance (a dataclass field, or set by `__init__`), not the class's.
    per_instance: bool = False

    @property
    def dotted(self) -> str:
        return self.path.replace(":", ".").replace("()", "")

    @property
    def distribution(self) -> str:
        top = self.path.split(".")[0].split(":")[0]
        if top == "dbt":
            return "dbt-duckdb" if self.path.startswith("dbt.adapters.duckdb") else "dbt-core"
        return top.replace("_", "-")

    def resolve(self) -> object:
        module_name, _, attributes = self.path.partition(":")
        found: object = importlib.import_module(module_name)
        names = attributes.split(".") if attributes else []
        if self.per_instance:
            *names, attribute = names
        for attribute_name in names:
            instantiate = attribute_name.endswith("()")
            name = attribute_name.removesuffix("()")
            found = inspect.getattr_static(found, name)
            if instantiate:
                found = found()
        if self.per_instance:
            fields = getattr(found, "__dataclass_fields__", {})
            assigned = rf"self\.{attribute}\s*(:[^=]*)?="  # annotated (on several lines) or not
            if attribute not in fields and not re.search(
                assigned, inspect.getsource(found.__init__)
            ):
                raise AttributeError(f"no instance of {found.__name__} has {attribute}")
        return found


PRIVATE_NAMES = [
    # Dagster's condition-evaluation API: the conditions are written on it.
    Private(
        "dagster._core.definitions.declarative_automation.automation_condition:"
        "BuiltinAutomationCondition",
        "conditions.py, internals/conditions.py, reuse.py",
    ),
    Private(
        "dagster._core.definitions.events:AssetKeyPartitionKey",
        "NothingNewSinceLastBuild (reuse.py)",
    ),
    Private(
        "dagster._core.asset_graph_view.asset_graph_view:AssetGraphView."
        "get_inner_queryer_for_back_compat",
        "NothingNewSinceLastBuild (reuse.py)",
        params=("self",),
    ),
    Private(
        "dagster._utils.caching_instance_queryer:CachingInstanceQueryer."
        "get_latest_materialization_or_observation_record",
        "NothingNewSinceLastBuild (reuse.py)",
        params=("self", "asset_partition", "after_cursor", "before_cursor"),
    ),
    Private(
        "dagster._utils.caching_instance_queryer:CachingInstanceQueryer.get_asset_record",
        "NothingNewSinceLastBuild (reuse.py)",
        params=("self", "asset_key"),
    ),
    Private(
        "dagster._utils.caching_instance_queryer:CachingInstanceQueryer."
        "get_asset_partitions_updated_after_cursor",
        "NothingNewSinceLastBuild (reuse.py)",
        params=(
            "self",
            "asset_key",
            "asset_partitions",
            "after_cursor",
            "respect_materialization_data_versions",
        ),
    ),
    # Evaluating only what changed (internals/what_changed.py): the asset's previous cursor,
    # what the evaluator reads of a result, and one batched read per tick of what changed.
    Private(
        "dagster._core.definitions.declarative_automation.automation_context:"
        "AutomationContext._cursor",
        "EvaluatedOnChange (internals/what_changed.py)",
        per_instance=True,
    ),
    Private(
        "dagster._core.definitions.declarative_automation.automation_condition:"
        "AutomationResult._context",
        "CarriedForward (internals/what_changed.py)",
        per_instance=True,
    ),
    Private(
        "dagster._core.definitions.declarative_automation.automation_condition:"
        "AutomationResult.get_new_cursor",
        "CarriedForward (internals/what_changed.py), replaced",
        params=("self",),
    ),
    Private(
        "dagster._core.definitions.declarative_automation.automation_condition:"
        "AutomationResult.get_child_node_cursors",
        "Packed, CarriedForward (internals/what_changed.py), replaced",
        params=("self",),
    ),
    Private(
        "dagster._core.definitions.declarative_automation.automation_condition:"
        "AutomationResult.value_hash",
        "CarriedForward (internals/what_changed.py), replaced",
        kind=functools.cached_property,
    ),
    Private(
        "dagster._core.definitions.declarative_automation.serialized_objects:"
        "AutomationConditionCursor",
        "CarriedForward (internals/what_changed.py)",
    ),
    Private(
        "dagster._core.events:EVENT_TYPE_TO_PIPELINE_RUN_STATUS",
        "EvaluatedOnChange (internals/what_changed.py)",
        kind=dict,
    ),
    Private("dagster._core.execution.backfill:BulkActionsFilter", "internals/what_changed.py"),
    Private("dagster._core.execution.backfill:BulkActionStatus", "internals/what_changed.py"),
    Private(
        "dagster._core.storage.event_log.base:AssetRecord",
        "internals/what_changed.py, internals/latest_runs.py",
    ),
    Private(
        "dagster._time:_mockable_get_current_timestamp",
        "SimulatedClock (internals/simulated_clock.py)",
        params=(),
    ),
    Private(
        "dagster._time:_mockable_get_current_datetime",
        "SimulatedClock (internals/simulated_clock.py)",
        params=(),
    ),
    Private(
        "dagster._core.test_utils:get_freezable_log_manager",
        "SimulatedClock (internals/simulated_clock.py)",
        params=(),
    ),
    Private(
        "dagster._core.log_manager:DagsterLogManager",
        "SimulatedClock (internals/simulated_clock.py)",
    ),
    Private(
        "dagster._core.definitions.data_version:CODE_VERSION_TAG",
        "NothingNewSinceLastBuild (reuse.py)",
        kind=str,
    ),
    Private("dagster._core.asset_graph_view.entity_subset:EntitySubset", "the conditions"),
    Private("dagster._core.asset_graph_view.asset_graph_view:AssetGraphView", "the conditions"),
    Private("dagster._core.asset_graph_view.asset_graph_view:TemporalContext", "AnyParentUpdated"),
    Private("dagster._record:record", "the conditions"),
    Private(
        "dagster._core.definitions.assets.graph.asset_graph:executable_in_same_run",
        "internals/conditions.py",
        params=("asset_graph", "child_key", "parent_key"),
    ),
    Private(
        "dagster._core.storage.asset_check_execution_record:"
        "AssetCheckExecutionResolvedStatus.FAILED",
        "ParentFailed",
    ),
    Private(
        "dagster._core.storage.asset_check_execution_record:AssetCheckExecutionRecordStatus.FAILED",
        "SafeScheduledJobComponent",
    ),
    Private("dagster._core.storage.dagster_run:NOT_FINISHED_STATUSES", "SafeScheduledJobComponent"),
    Private("dagster._core.storage.dagster_run:IN_PROGRESS_RUN_STATUSES", "SafeToRun", kind=list),
    # Skipping a quiet tick (internals/quiet_ticks.py): the sensor's evaluation, Dagster's own
    # up to the cursor it serializes, with one shortcut before it.
    Private(
        "dagster._core.definitions.automation_tick_evaluation_context:"
        "AutomationTickEvaluationContext",
        "SkipsQuietTicks (internals/quiet_ticks.py)",
        params=(
            "evaluation_id",
            "instance",
            "asset_graph",
            "cursor",
            "materialize_run_tags",
            "observe_run_tags",
            "auto_observe_asset_keys",
            "asset_selection",
            "logger",
            "emit_backfills",
            "default_condition",
        ),
    ),
    Private(
        "dagster._core.definitions.asset_daemon_cursor:AssetDaemonCursor",
        "SkipsQuietTicks (internals/quiet_ticks.py)",
    ),
    Private(
        "dagster._core.definitions.automation_condition_sensor_definition:MAX_ENTITIES",
        "SkipsQuietTicks (internals/quiet_ticks.py)",
        kind=int,
    ),
    Private(
        "dagster._core.definitions.sensor_definition:wrap_sensor_evaluation",
        "SkipsQuietTicks (internals/quiet_ticks.py)",
        params=("sensor_name", "fn"),
    ),
    Private(
        "dagster._core.definitions.sensor_definition:SensorDefinition._raw_fn",
        "SkipsQuietTicks (internals/quiet_ticks.py), replaced",
        per_instance=True,
    ),
    Private(
        "dagster._core.definitions.sensor_definition:SensorDefinition._evaluation_fn",
        "SkipsQuietTicks (internals/quiet_ticks.py), replaced",
        per_instance=True,
    ),
    Private(
        "dagster._daemon.asset_daemon:asset_daemon_cursor_from_instigator_serialized_cursor",
        "SkipsQuietTicks (internals/quiet_ticks.py)",
        params=("serialized_cursor", "asset_graph"),
    ),
    Private(
        "dagster._daemon.asset_daemon:asset_daemon_cursor_to_instigator_serialized_cursor",
        "SkipsQuietTicks (internals/quiet_ticks.py)",
        params=("cursor",),
    ),
    Private(
        "dagster._time:get_current_datetime",
        "SkipsQuietTicks (internals/quiet_ticks.py)",
        params=("tz",),
    ),
    Private(
        "dagster._utils.schedules:reverse_cron_string_iterator",
        "SkipsQuietTicks (internals/quiet_ticks.py)",
        params=("end_timestamp", "cron_string", "execution_timezone"),
    ),
    Private(
        "dagster._utils.schedules:cron_string_iterator",
        "overdue_after_grace",
        params=("start_timestamp", "cron_string", "execution_timezone"),
    ),
    Private(
        "dagster._utils.schedules:get_smallest_cron_interval",
        "overdue_after_grace",
        params=("cron_string", "execution_timezone"),
    ),
    Private(
        "dagster._utils.schedules:is_valid_cron_schedule",
        "the components' cron checks",
        params=("cron_schedule",),
    ),
    Private(
        "dagster._core.definitions.data_version:DATA_VERSION_TAG",
        "the source observations, the benchmark",
        kind=str,
    ),
    Private("dagster._core.remote_origin:InProcessCodeLocationOrigin", "replay.py"),
    Private("dagster._core.remote_origin:RemoteJobOrigin", "replay.py"),
    Private("dagster._core.remote_origin:RemoteRepositoryOrigin", "replay.py"),
    Private("dagster._core.types.loadable_target_origin:LoadableTargetOrigin", "replay.py"),
    Private("dagster._utils:pushd", "cancellable_dbt.py", params=("path",)),
    # dagster-dbt: the state refresh's parse, and the run's dbt process.
    Private(
        "dagster_dbt.dbt_project:DagsterDbtProjectPreparer._prepare_manifest",
        "dbt_cli.py (replaced while refreshing state)",
        params=("self", "project"),
    ),
    Private(
        "dagster_dbt.dbt_project:DagsterDbtProjectPreparer()._prepare_project_cli_args",
        "dbt_cli.py",
        kind=list,
    ),
    Private(
        "dagster_dbt.dbt_project:DagsterDbtProjectPreparer._invalidate_seeds_in_partial_parse",
        "dbt_cli.py",
        params=("self", "project"),
    ),
    Private(
        "dagster_dbt:DbtCliResource._cli_version",
        "dbt_cli.py (set in the instance's __dict__)",
        kind=functools.cached_property,
    ),
    Private(
        "dagster_dbt:DbtCliResource._initialize_dbt_core_adapter",
        "cancellable_dbt.py (called, and replaced in the instance's __dict__)",
        params=("self", "args"),
    ),
    Private(
        "dagster_dbt.components.dbt_project.component:DbtProjectComponent._project_manager",
        "dbt_cli.py",
        kind=functools.cached_property,
    ),
    Private(
        "dagster_dbt.dbt_project_manager:DbtProjectArgsManager._local_project_dir",
        "dbt_cli.py",
        params=("self", "state_path"),
    ),
    Private(
        "dagster_dbt.core.dbt_event_iterator:_fetch_column_metadata",
        "cancellable_dbt.py",
        params=("invocation", "event", "with_column_lineage"),
    ),
    Private(
        "dagster_dbt.core.dbt_event_iterator:_fetch_row_count_metadata",
        "cancellable_dbt.py",
        params=("invocation", "event"),
    ),
    # dbt: the build's graph, in the component's `dbt` (blocking_tests.py).
    Private(
        "dbt.compilation:Linker.add_test_edges",
        "blocking_tests.py (replaced in its own process)",
        params=("self", "manifest"),
    ),
    # dbt-duckdb: its process-wide connection.
    Private("dbt.adapters.duckdb.connections:DuckDBConnectionManager._LOCK", "duckdb_file.py"),
    Private("dbt.adapters.duckdb.connections:DuckDBConnectionManager._ENV", "duckdb_file.py"),
]
# Private names our code reads or writes as attributes or __dict__ keys, by attribute name.
GUARDED_ATTRIBUTES = {private.dotted.rsplit(".", 1)[1] for private in PRIVATE_NAMES}
GUARDED_IMPORTS = {
    (private.path.split(":")[0], private.path.split(":")[1].split(".")[0])
    for private in PRIVATE_NAMES
}


@pytest.mark.parametrize("private", PRIVATE_NAMES, ids=lambda private: private.dotted)
def test_private_name_is_still_there(private: Private) -> None:
    release = f"{private.distribution} {importlib.metadata.version(private.distribution)}"
    relies = (
        f"{private.used_by} relies on it: see docs/internals.md for what it replaces; "
        "`speedups: false` runs without the speedups"
    )
    try:
        found = private.resolve()
    except (ImportError, AttributeError) as gone:
        pytest.fail(f"{private.dotted} is gone in {release} ({gone}). {relies}.")
    if private.kind is not None:
        assert isinstance(found, private.kind), (
            f"{private.dotted} is a {type(found).__name__} in {release}, not a "
            f"{private.kind.__name__}. {relies}."
        )
    if private.params is not None:
        function = found.__func__ if isinstance(found, staticmethod | classmethod) else found
        params = tuple(inspect.signature(function).parameters)[: len(private.params)]
        assert params == private.params, (
            f"{private.dotted} now takes {params} in {release}, not {private.params}. {relies}."
        )


# Dagster's evaluation of a sensor evaluated in the code server, which `SkipsQuietTicks` copies
# (internals/quiet_ticks.py: `_evaluate`), as of dagster 1.13.27.
COPIED_SENSOR_EVALUATION = "bf6ac80a4a64db02"


def test_the_copied_sensor_evaluation_is_dagsters() -> None:
    from dagster._core.definitions import automation_condition_sensor_definition as sensors

    source = inspect.getsource(sensors._evaluate)
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    release = f"dagster {importlib.metadata.version('dagster')}"
    assert digest == COPIED_SENSOR_EVALUATION, (
        f"dagster._core.definitions.automation_condition_sensor_definition._evaluate changed in "
        f"{release}: compare it with `_evaluate` in internals/quiet_ticks.py, which copies it "
        f"(SkipsQuietTicks), bring the copy up to date and record the new digest {digest}."
    )


def test_the_internals_page_lists_every_private_name() -> None:
    listed = set(re.findall(r"^\| `([\w.]+)`", INTERNALS_DOC.read_text(), re.M))
    assert listed == {private.dotted for private in PRIVATE_NAMES}


def test_no_private_name_is_used_outside_the_fence() -> None:
    outside = [
        f"{path.relative_to(REPO_ROOT)}:{line}: {what}"
        for path in SRC.rglob("*.py")
        if not any(path == fenced or fenced in path.parents for fenced in FENCED)
        for line, what in _private_uses(path)
    ]
    assert not outside, "private names outside the fence:\n" + "\n".join(outside)


def test_every_private_name_inside_the_fence_is_guarded() -> None:
    unguarded = [
        f"{path.relative_to(REPO_ROOT)}:{line}: {what}"
        for fenced in FENCED
        for path in ([fenced] if fenced.is_file() else sorted(fenced.rglob("*.py")))
        for line, what in _private_uses(path)
        if not _guarded(what)
    ]
    assert not unguarded, "private names without a guard:\n" + "\n".join(unguarded)


def _guarded(what: str) -> bool:
    kind, _, name = what.partition(" ")
    if kind == "import":
        module, _, imported = name.rpartition(".")
        return (module, imported) in GUARDED_IMPORTS
    return name in GUARDED_ATTRIBUTES


def _private_uses(path: Path) -> list[tuple[int, str]]:
    """Private names of other packages the module imports, reads or writes: `import a._b.c`
    (`import a._b.c.name`), attributes `x._name` of anything but `self`/`cls`
    (`attribute _name`), and `__dict__["_name"]` keys (`attribute _name`)."""
    uses = []
    tree = ast.parse(path.read_text())
    own = _defined_in(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not _ours(node.module):
            for alias in node.names:
                if _is_private(node.module) or alias.name.startswith("_"):
                    uses.append((node.lineno, f"import {node.module}.{alias.name}"))
        elif isinstance(node, ast.Attribute) and _is_private_name(node.attr):
            # A subclass's `self._name` is the base class's unless this module defines it.
            on_self = isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"}
            if not (on_self and node.attr in own):
                uses.append((node.lineno, f"attribute {node.attr}"))
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "__dict__"
            and isinstance(node.slice, ast.Constant)
            and _is_private_name(str(node.slice.value))
        ):
            uses.append((node.lineno, f"attribute {node.slice.value}"))
    return uses


def _defined_in(tree: ast.Module) -> set[str]:
    """Names the module defines: functions, classes, class attributes, `self.x = ...`."""
    defined = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.AnnAssign | ast.Assign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        defined.add(name.id)
                    elif isinstance(name, ast.Attribute):
                        defined.add(name.attr)
    return defined


def _ours(module: str) -> bool:
    return module.split(".")[0] in {"dbt_automation_demo", "__future__"}


def _is_private(module: str) -> bool:
    return any(part.startswith("_") for part in module.split("."))


def _is_private_name(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")
