"""The dbt project as Dagster assets, each tagged and automated by its dbt materialization."""

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import dagster as dg
import dagster_dbt
from dagster.components.resolved.model import Resolver
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject
from dagster_dbt.components.dbt_project.component import DbtProjectComponentTranslator

from dbt_automation_demo.automation import (
    DEFAULT_DAILY_CRON,
    DEFAULT_TIMEZONE,
    invalid_cron_reason,
    invalid_timezone_reason,
    overdue_after_grace,
    refresh_daily,
    refresh_on_change,
    run_as_soon_as_every_model_exists,
)
from dbt_automation_demo.components.code_versions import CompiledSqlCodeVersions
from dbt_automation_demo.components.dbt_state import reuse_settings
from dbt_automation_demo.components.multi_model_tests import multi_model_tests
from dbt_automation_demo.components.source_observations import (
    SourceObservationArgs,
    build_source_observations,
    project_sources,
)
from dbt_automation_demo.internals.blocking_tests import DBT_EXECUTABLE
from dbt_automation_demo.internals.cancellable_dbt import dbt_events
from dbt_automation_demo.internals.collector import built_once_for_the_process
from dbt_automation_demo.internals.dbt_cli import refresh_state, skip_dbt_version_probe
from dbt_automation_demo.internals.duckdb_file import release_duckdb_file
from dbt_automation_demo.internals.lineage_log import unresolved_lineage_as_info
from dbt_automation_demo.internals.quiet_ticks import SkipsQuietTicks
from dbt_automation_demo.reuse import MATERIALIZATION_TAG, ReuseSettings

DUCKDB_PATH_ENV = "DBT_DUCKDB_PATH"
# What the shipped defs.yaml reads `speedups` from (`nox -s stock` sets it to false).
SPEEDUPS_ENV = "DBT_AUTOMATION_SPEEDUPS"
DEFAULT_DUCKDB_PATH = "data/analytics.duckdb"
MOTHERDUCK_PREFIX = "md:"
ASSET_RESOURCE_TYPES = frozenset({"model", "seed", "snapshot"})
# Dagster refuses a sensor evaluated in the code server that targets more assets than this.
MAX_ASSETS_PER_SENSOR = 500


class ComponentConfigError(ValueError):
    """A component attribute in defs.yaml has a value that cannot work."""

    def __init__(self, component: str, attribute: str, value: object, reason: str):
        super().__init__(f"{component} attribute `{attribute}` = {value!r}: {reason}")


@dataclass
class AutomationSensorArgs(dg.Resolvable):
    """The sensor that evaluates this project's automation conditions."""

    name: Annotated[
        str | None,
        Resolver.default(
            description=(
                "Sensor name. By default `<dbt project name>_automation_sensor`, so that each "
                "dbt project's instance has its own."
            ),
            examples=["analytics_automation_sensor"],
        ),
    ] = None
    minimum_interval_seconds: Annotated[
        int,
        Resolver.default(
            description="Seconds between evaluations (Dagster's default is 30).",
            examples=[30, "{{ env('AUTOMATION_SENSOR_INTERVAL_SECONDS', '30') }}"],
        ),
    ] = 30
    default_status: Annotated[
        Literal["RUNNING", "STOPPED"],
        Resolver.default(
            description="RUNNING so a fresh `dg dev` automates without a click in the UI.",
            examples=["RUNNING"],
        ),
    ] = "RUNNING"
    split_by_folder: Annotated[
        bool,
        Resolver.default(
            description=(
                "One sensor per top folder of the dbt project (`staging`, `marts`, ...; seeds "
                "and snapshots at the top of their paths count as `seeds` and `snapshots`), "
                "named `<name>_<folder>`: each folder's automation can be stopped alone. A "
                "table and a parent due on the same tick in different sensors are requested "
                "in two runs, not one."
            ),
            examples=[True],
        ),
    ] = False
    max_assets_per_sensor: Annotated[
        int,
        Resolver.default(
            description=(
                f"At most this many assets per sensor, 1 to {MAX_ASSETS_PER_SENSOR}. The policies "
                "are written in Python, so Dagster evaluates them in the code server, where "
                f"it refuses a sensor of more than {MAX_ASSETS_PER_SENSOR} assets. A larger "
                "project (or folder) is split in the order of dbt's unique ids, into sensors "
                "named `<name>_1`, `<name>_2`, ..."
            ),
            examples=[MAX_ASSETS_PER_SENSOR, 250],
        ),
    ] = MAX_ASSETS_PER_SENSOR

    def invalid_max_assets_reason(self) -> str | None:
        """None when `max_assets_per_sensor` can work, otherwise why it cannot."""
        if 1 <= self.max_assets_per_sensor <= MAX_ASSETS_PER_SENSOR:
            return None
        return (
            f"must be between 1 and {MAX_ASSETS_PER_SENSOR} (Dagster's limit for a sensor "
            "evaluated in the code server)"
        )

    def build(
        self, folder_by_key: Mapping[dg.AssetKey, str], default_name: str, speedups: bool = True
    ) -> list[dg.AutomationConditionSensorDefinition]:
        """The sensors for these assets (`folder_by_key` in the order to split them in); with
        the speedups, each skips a tick on which nothing happened (internals/quiet_ticks.py)."""
        groups = sensor_groups(
            folder_by_key, self.name or default_name, self.split_by_folder,
            self.max_assets_per_sensor,
        )  # fmt: skip
        # The policies are Python (dbt_automation_demo.conditions), which the daemon cannot
        # load: the sensors are evaluated in the code server.
        sensor = SkipsQuietTicks if speedups else _evaluated_in_the_code_server
        return [
            sensor(
                name,
                target=dg.AssetSelection.assets(*keys),
                minimum_interval_seconds=int(self.minimum_interval_seconds),
                default_status=dg.DefaultSensorStatus[self.default_status],
            )
            for name, keys in groups.items()
        ]


def _evaluated_in_the_code_server(name: str, **kwargs) -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(name, use_user_code_server=True, **kwargs)


def sensor_groups(
    folder_by_key: Mapping[dg.AssetKey, str], name: str, by_folder: bool, max_assets: int
) -> dict[str, list[dg.AssetKey]]:
    """Sensor name -> its assets: by folder if asked, then in chunks of at most `max_assets`,
    each in the order given. One group keeps `name` itself."""
    folders: dict[str, list[dg.AssetKey]] = {}
    for key, folder in folder_by_key.items():
        folders.setdefault(_sensor_name_part(folder) if by_folder else "", []).append(key)
    groups = {}
    for folder, keys in folders.items():
        chunks = [keys[start : start + max_assets] for start in range(0, len(keys), max_assets)]
        for number, chunk in enumerate(chunks, start=1):
            parts = [name, folder, str(number) if len(chunks) > 1 else ""]
            groups["_".join(part for part in parts if part)] = chunk
    return groups


def _sensor_name_part(folder: str) -> str:
    # Sensor names allow letters, digits and underscores only.
    return re.sub(r"[^A-Za-z0-9_]", "_", folder)


@dataclass
class CustomDbtComponent(dagster_dbt.DbtProjectComponent):
    """A dbt project whose assets carry `dagster/materialization` and an automation policy.

    Views refresh when their SQL or a parent changes; everything else (tables, seeds,
    incrementals, snapshots) refreshes on a cron tick. The policies themselves live in
    `dbt_automation_demo.automation`.
    """

    cli_args: Annotated[
        list[str | dict[str, Any]],
        Resolver.passthrough(
            description=(
                "Arguments to the dbt CLI. The default builds with `--indirect-selection "
                "buildable`; each test on several models that the run plans (a relationships "
                "test) is added by name once every model it reads exists, and a test that "
                "reads a model never built is excluded, with a warning naming it."
            ),
            examples=[["build", "--indirect-selection", "buildable"]],
        ),
    ] = field(default_factory=lambda: ["build", "--indirect-selection", "buildable"])
    daily_cron: Annotated[
        str,
        Resolver.default(
            description="Cron schedule for every asset that is not a view.",
            examples=[DEFAULT_DAILY_CRON, "*/2 * * * *"],
        ),
    ] = DEFAULT_DAILY_CRON
    cron_timezone: Annotated[
        str,
        Resolver.default(
            description="IANA time zone in which every cron of this component is read.",
            examples=[DEFAULT_TIMEZONE, "Europe/Berlin"],
        ),
    ] = DEFAULT_TIMEZONE
    cron_by_tag: Annotated[
        dict[str, str],
        Resolver.default(
            description=(
                "dbt tag -> cron for non-view assets carrying that tag. The first tag listed "
                "that the model has wins, over `cron_by_path` and `daily_cron`."
            ),
            examples=[{"critical": "*/15 * * * *", "batch": "0 4 * * *"}],
        ),
    ] = field(default_factory=dict)
    cron_by_path: Annotated[
        dict[str, str],
        Resolver.default(
            description=(
                "Folder under the dbt model path -> cron for non-view assets in it or below. "
                "The longest matching folder wins over `daily_cron`."
            ),
            examples=[{"marts/finance": "0 * * * *"}],
        ),
    ] = field(default_factory=dict)
    reuse: Annotated[
        bool,
        Resolver.default(
            description=(
                "true: every model, seed and snapshot is built only when its code changed or "
                "a parent has new data since its last build (dbt State's reuse), with dbt "
                "State's defaults (`lag_tolerance` 45 minutes, new data from any parent) where "
                "its dbt config sets no `state`. false (the default): only the nodes whose dbt "
                "config has `state` (`+state:` on a folder or the project in dbt_project.yml, "
                "`config(state=...)` in a model) reuse. A reusing node has no freshness policy: "
                "Dagster's would turn it overdue when nothing needed rebuilding (docs/reuse.md)."
            ),
            examples=[False, True],
        ),
    ] = False
    speedups: Annotated[
        bool,
        Resolver.default(
            description=(
                "true: the measured workarounds of dagster-dbt's, dbt's and DuckDB's internals "
                "(`dbt_automation_demo.internals`, listed in docs/internals.md) and single-node "
                "conditions. false: stock dagster-dbt for parse, run, metadata and state refresh, "
                "and Dagster's built-in conditions, with the same policies; the test gate, the "
                "compiled-SQL code versions and the DuckDB release stay (docs/internals.md)."
            ),
            examples=[True, "{{ env('DBT_AUTOMATION_SPEEDUPS', 'true') }}"],
        ),
    ] = True
    automation_sensor: Annotated[
        AutomationSensorArgs,
        Resolver.default(
            description="The automation sensor for these assets, declared so it starts RUNNING.",
            examples=[{"minimum_interval_seconds": 30, "default_status": "RUNNING"}],
        ),
    ] = field(default_factory=AutomationSensorArgs)
    source_observation: Annotated[
        SourceObservationArgs,
        Resolver.default(
            description=(
                "When the dbt sources (data loaded outside Dagster) are observed: each source "
                "table is an observable asset whose data version changes when new data lands."
            ),
            examples=[{"cron": "*/5 * * * *"}],
        ),
    ] = field(default_factory=SourceObservationArgs)

    def __post_init__(self) -> None:
        # A templated value (`{{ env(...) }}`) arrives as a string, unchecked.
        self.speedups = _as_bool(self.speedups, "speedups")
        self.reuse = _as_bool(self.reuse, "reuse")
        crons = {
            "daily_cron": self.daily_cron,
            "source_observation.cron": self.source_observation.cron,
            **{f"cron_by_tag.{tag}": cron for tag, cron in self.cron_by_tag.items()},
            **{f"cron_by_path.{path}": cron for path, cron in self.cron_by_path.items()},
        }
        for attribute, cron in crons.items():
            _raise_if(invalid_cron_reason(cron), attribute, cron)
        _raise_if(invalid_timezone_reason(self.cron_timezone), "cron_timezone", self.cron_timezone)
        _raise_if(
            self.automation_sensor.invalid_max_assets_reason(),
            "automation_sensor.max_assets_per_sensor",
            self.automation_sensor.max_assets_per_sensor,
        )

    @cached_property
    def translator(self) -> DagsterDbtTranslator:
        return TaggedAndAutomatedTranslator(self, self.translation_settings)

    def policy_for(self, node: Mapping[str, Any], materialized: str) -> dg.AutomationCondition:
        """The automation condition for a dbt node: by materialization, then tag and folder,
        reusing its last build where its dbt config (or `reuse`) says so."""
        reuse = self.reuse_for(node)
        if materialized == "view":
            return refresh_on_change(speedups=self.speedups, reuse=reuse)
        return refresh_daily(
            self.cron_for(node), self.cron_timezone, speedups=self.speedups, reuse=reuse
        )

    def reuse_for(self, node: Mapping[str, Any]) -> ReuseSettings | None:
        """dbt State's settings for the node (its `state` config), or None if it does not
        reuse. A bad value raises, naming the node, its file, the key and the value."""
        return reuse_settings(node, self.reuse)

    def freshness_for(
        self, node: Mapping[str, Any], materialized: str
    ) -> dg.FreshnessPolicy | None:
        """Dagster's freshness policy for a dbt node: none for a view or a node that reuses
        (its last build stays current while nothing changed), from its cron otherwise."""
        if materialized == "view" or self.reuse_for(node) is not None:
            return None
        return overdue_after_grace(self.cron_for(node), self.cron_timezone)

    def cron_for(self, node: Mapping[str, Any]) -> str:
        node_tags = set(node.get("tags", ()))
        for tag, cron in self.cron_by_tag.items():
            if tag in node_tags:
                return cron
        folder = "/".join(node["fqn"][1:-1])
        matching = [path for path in self.cron_by_path if _is_within(folder, path.strip("/"))]
        if matching:
            return self.cron_by_path[max(matching, key=len)]
        return self.daily_cron

    def build_defs_from_state(
        self, context: dg.ComponentLoadContext, state_path: Path | None
    ) -> dg.Definitions:
        with ExitStack() as speedups:
            if self.speedups:
                speedups.enter_context(built_once_for_the_process())
            dbt_defs = super().build_defs_from_state(context, state_path)
        sensors = self.automation_sensor.build(
            folder_by_key=_top_folder_by_key(dbt_defs),
            default_name=f"{self.dbt_project.name}_automation_sensor",
            speedups=self.speedups,
        )
        return dg.Definitions.merge(
            dbt_defs, dg.Definitions(sensors=sensors), self._source_observations(dbt_defs)
        )

    def _source_observations(self, dbt_defs: dg.Definitions) -> dg.Definitions:
        """The observation of every dbt source, on the dbt project the runs use (the state's)."""
        specs = (spec for assets_def in dbt_defs.assets for spec in assets_def.specs)
        first = next(specs, None)
        if first is None:
            return dg.Definitions()
        manifest = first.metadata["dagster_dbt/manifest"].manifest
        project: DbtProject = first.metadata["dagster_dbt/project"]
        sources = project_sources(
            manifest,
            lambda unique_id: self.translator.get_asset_spec(manifest, unique_id, project).key,
        )
        return build_source_observations(
            sources,
            project,
            self.source_observation,
            timezone=self.cron_timezone,
            pool=self.op.pool if self.op is not None else None,
            duckdb_file=duckdb_path(Path(project.project_dir)),
            speedups=self.speedups,
        )

    def write_state_to_path(self, state_path: Path) -> None:
        if not (self.speedups and refresh_state(self, state_path)):
            super().write_state_to_path(state_path)

    def get_cli_args(self, context: dg.AssetExecutionContext) -> list[str]:
        """`cli_args`, and the run's tests on several models: each one planned runs when every
        model it reads exists, and is deferred with a warning that names the missing model."""
        tests = multi_model_tests(context)
        for test in tests.deferred:
            context.log.warning(test.warning())
        return [*super().get_cli_args(context), *tests.cli_args()]

    def execute(self, context: dg.AssetExecutionContext, dbt: DbtCliResource) -> Iterator:
        # dbt skips everything below a model whose test failed, for a test on several models
        # too (dbt itself does only for a child of all the models the test reads).
        dbt = dbt.model_copy(update={"dbt_executable": DBT_EXECUTABLE})
        warehouse_file = duckdb_path(Path(dbt.project_dir))
        if warehouse_file is not None:
            warehouse_file.parent.mkdir(parents=True, exist_ok=True)
        # dbt's in-process set-up (dagster-dbt uses it to read row counts) changes the process's
        # working directory to the dbt project; a long-lived process must get its own back.
        working_directory = os.getcwd()
        try:
            with unresolved_lineage_as_info():
                if self.speedups:
                    skip_dbt_version_probe(dbt)
                    args = self.get_cli_args(context)
                    yield from dbt_events(dbt, args, context, self.include_metadata)
                else:
                    yield from super().execute(context, dbt)
        finally:
            release_duckdb_file()
            os.chdir(working_directory)


class TaggedAndAutomatedTranslator(DbtProjectComponentTranslator):
    """dagster-dbt's translator for the component: the materialization tag, the component's
    policy and the compiled-SQL code version through dagster-dbt's own translator methods, and
    the freshness policy (which has none) by copying each non-view spec once, memoized, because
    dagster-dbt asks for a node's spec again for every child (docs/performance.md measures it).
    """

    _code_versions: CompiledSqlCodeVersions | None = None
    _specs: dict[tuple[str, int], dg.AssetSpec]

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None
    ) -> dg.AssetSpec:
        # The code version needs the whole manifest (macros, ephemeral parents), which
        # dagster-dbt hands `get_asset_spec` but not `get_code_version`.
        if self._code_versions is None or self._code_versions.manifest is not manifest:
            self._code_versions, self._specs = CompiledSqlCodeVersions(manifest), {}
        # dagster-dbt asks again for every parent of every node: each spec is made once.
        memo = (unique_id, id(project))
        if memo not in self._specs:
            self._specs[memo] = self._spec_with_freshness(manifest, unique_id, project)
        return self._specs[memo]

    def _spec_with_freshness(
        self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        node = manifest["nodes"].get(unique_id)
        if node is None or node["resource_type"] not in ASSET_RESOURCE_TYPES:
            return spec
        # dagster-dbt has no translator method for Dagster's (new) freshness policy.
        freshness = self.component.freshness_for(node, node["config"]["materialized"])
        return spec if freshness is None else spec.replace_attributes(freshness_policy=freshness)

    def get_asset_check_spec(
        self,
        asset_spec: dg.AssetSpec,
        manifest: Mapping[str, Any],
        unique_id: str,
        project: DbtProject | None,
    ) -> dg.AssetCheckSpec | None:
        spec = super().get_asset_check_spec(asset_spec, manifest, unique_id, project)
        if spec is None or not spec.additional_deps:
            return spec
        # A test that reads other models too runs when they all exist, with any of them.
        return dg.AssetCheckSpec(
            name=spec.name,
            asset=spec.asset_key,
            description=spec.description,
            additional_deps=spec.additional_deps,
            blocking=spec.blocking,
            metadata=spec.metadata,
            automation_condition=run_as_soon_as_every_model_exists(self.component.speedups),
            partitions_def=spec.partitions_def,
        )

    def get_code_version(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if self._code_versions is None:
            return super().get_code_version(dbt_resource_props)
        return self._code_versions.of(dbt_resource_props)

    def get_tags(self, dbt_resource_props: Mapping[str, Any]) -> Mapping[str, str]:
        tags = super().get_tags(dbt_resource_props)
        if dbt_resource_props["resource_type"] not in ASSET_RESOURCE_TYPES:
            return tags
        return {**tags, MATERIALIZATION_TAG: dbt_resource_props["config"]["materialized"]}

    def get_automation_condition(
        self, dbt_resource_props: Mapping[str, Any]
    ) -> dg.AutomationCondition | None:
        if dbt_resource_props["resource_type"] not in ASSET_RESOURCE_TYPES:
            return super().get_automation_condition(dbt_resource_props)
        materialized = dbt_resource_props["config"]["materialized"]
        return self.component.policy_for(dbt_resource_props, materialized)


def duckdb_path(project_dir: Path) -> Path | None:
    """The DuckDB file dbt writes, as profiles.yml resolves it (relative to the dbt project);
    None for a MotherDuck database (`md:...`), which is not a file."""
    configured = os.environ.get(DUCKDB_PATH_ENV, DEFAULT_DUCKDB_PATH)
    if configured.startswith(MOTHERDUCK_PREFIX):
        return None
    return project_dir / configured


def _top_folder_by_key(dbt_defs: dg.Definitions) -> dict[dg.AssetKey, str]:
    """Each dbt asset's top folder under its resource path, ordered by dbt's unique ids (the
    manifest's own order depends on the order dbt read the files in)."""
    folders = {}
    for assets_def in dbt_defs.assets:
        for spec in assets_def.specs:
            unique_id = spec.metadata["dagster_dbt/unique_id"]
            node = spec.metadata["dagster_dbt/manifest"].manifest["nodes"][unique_id]
            path = node["fqn"][1:-1]
            folders[unique_id] = (spec.key, path[0] if path else f"{node['resource_type']}s")
    return dict(folders[unique_id] for unique_id in sorted(folders))


def _is_within(folder: str, ancestor: str) -> bool:
    return folder == ancestor or folder.startswith(f"{ancestor}/")


def speedups_in_environment() -> bool:
    """`DBT_AUTOMATION_SPEEDUPS` read as the shipped `defs.yaml` reads it (unset: true)."""
    return _as_bool(os.environ.get(SPEEDUPS_ENV, "true"), "speedups")


def _as_bool(value: bool | str, attribute: str) -> bool:
    words = {"true": True, "false": False}
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() not in words:
        _raise_if("must be true or false", attribute, value)
    return words[str(value).strip().lower()]


def _raise_if(reason: str | None, attribute: str, value: object) -> None:
    if reason:
        raise ComponentConfigError("CustomDbtComponent", attribute, value, reason)
