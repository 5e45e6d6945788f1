"""dbt sources as observable assets: data that lands outside Dagster reaches the policies.

dagster-dbt makes each dbt source an external asset that never gets an event, so a view over a
source never hears that new data landed. Here each source table becomes an observable asset,
observed on a cron (one run for all of them, in the warehouse pool). Guarantees:
- its data version changes when, and only when, new data has landed: dbt's own
  `dbt source freshness` (`max_loaded_at`) where the source sets `loaded_at_field` or
  `loaded_at_query`; otherwise the files' paths, sizes and modification times for a file source
  (dbt-duckdb's `external_location`), or the row count and content hash of a DuckDB table;
- an observation is recorded only when the data version is not the last one recorded, so the
  automation tick after an observation reads only the sources with new data; each observation
  run still records every source's `dbt_source_has_data` check (and freshness check);
- a source that has no data (no file matches, the table is missing or empty, the query fails)
  gets no observation: it stays missing, which holds the models below it back as a missing
  parent does; its check `dbt_source_has_data` fails and says why (a warning: the
  observation run succeeds, and fails nothing else);
- an observation runs in the dbt builds' pool, so it never opens the DuckDB file while a build
  writes it, and a build never finds it open;
- dbt's `warn_after` / `error_after` become a non-blocking check on the source, with dbt's own
  verdict (pass, WARN, ERROR) at each observation.
The views' policy counts a new data version as a parent update; tables keep their cron.
"""

import glob
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import dagster as dg
from dagster.components.resolved.model import Resolver
from dagster_dbt import DbtCliResource, DbtProject

from dbt_automation_demo.automation import OBSERVED, OBSERVED_SOURCE_TAG
from dbt_automation_demo.internals.dagster_names import DATA_VERSION_TAG
from dbt_automation_demo.internals.dbt_cli import skip_dbt_version_probe
from dbt_automation_demo.internals.observations_in_pool import observed_in_pool

DEFAULT_OBSERVATION_CRON = "*/5 * * * *"
FRESHNESS_CHECK = "dbt_source_freshness"
HAS_DATA_CHECK = "dbt_source_has_data"
# dbt's verdict on a source's freshness -> the check's severity when it is not a pass.
_FRESHNESS_SEVERITY = {"warn": dg.AssetCheckSeverity.WARN, "error": dg.AssetCheckSeverity.ERROR}
_FRESHNESS_BOUNDS = ("warn_after", "error_after")
# What dbt reports as max_loaded_at for a source with no row.
_NO_ROW = "0001-01-01"


@dataclass
class SourceObservationArgs(dg.Resolvable):
    """When this project's dbt sources are observed."""

    cron: Annotated[
        str,
        Resolver.default(
            description=(
                "Cron schedule of the observation of every dbt source (in `cron_timezone`). "
                "A view over a source refreshes at the first automation tick after an "
                "observation that saw new data."
            ),
            examples=[DEFAULT_OBSERVATION_CRON, "0 * * * *"],
        ),
    ] = DEFAULT_OBSERVATION_CRON
    default_status: Annotated[
        Literal["RUNNING", "STOPPED"],
        Resolver.default(
            description="RUNNING so a fresh `dg dev` observes without a click in the UI.",
            examples=["RUNNING"],
        ),
    ] = "RUNNING"


@dataclass(frozen=True)
class Source:
    """One dbt source table and the asset key dagster-dbt gives it."""

    key: dg.AssetKey
    node: Mapping[str, Any]

    @property
    def unique_id(self) -> str:
        return self.node["unique_id"]

    @property
    def name(self) -> str:
        return f"{self.node['source_name']}.{self.node['name']}"

    @property
    def uses_dbt_freshness(self) -> bool:
        return bool(self.node.get("loaded_at_field") or self.node.get("loaded_at_query"))

    @property
    def freshness_criteria(self) -> dict[str, str]:
        """dbt's `warn_after` / `error_after` that dbt checks for this source (it needs a
        `loaded_at_*`), as `{"warn_after": "1 hour", ...}`; empty when there is none."""
        if not self.uses_dbt_freshness:
            return {}
        freshness = self.node.get("freshness") or {}
        return {
            bound: f"{rule['count']} {rule['period']}"
            for bound in _FRESHNESS_BOUNDS
            if (rule := freshness.get(bound)) and rule.get("count")
        }

    @property
    def external_location(self) -> str | None:
        meta = {**(self.node.get("config") or {}).get("meta", {}), **self.node.get("meta", {})}
        return meta.get("external_location")


class NoData(Exception):
    """The source has no data to observe, and why."""


def project_sources(
    manifest: Mapping[str, Any], key_of: Callable[[str], dg.AssetKey]
) -> list[Source]:
    """Every source table of the manifest, in unique-id order, with its asset key."""
    return [
        Source(key=key_of(unique_id), node=node)
        for unique_id, node in sorted(manifest.get("sources", {}).items())
    ]


def observation_job_name(project_name: str) -> str:
    """The job that observes every source of the dbt project `project_name`."""
    return f"observe_{project_name}_sources_job"


def observation_schedule_name(project_name: str) -> str:
    """The schedule that launches `observation_job_name(project_name)`."""
    return f"observe_{project_name}_sources_schedule"


def build_source_observations(
    sources: Sequence[Source],
    project: DbtProject,
    args: SourceObservationArgs,
    timezone: str,
    pool: str | None,
    duckdb_file: Path | None,
    speedups: bool = True,
) -> dg.Definitions:
    """The observable source assets, their freshness checks, and the schedule observing them."""
    if not sources:
        return dg.Definitions()
    specs = [_spec(source) for source in sources]
    checks = [
        dg.AssetCheckSpec(
            HAS_DATA_CHECK,
            asset=source.key,
            description="The source has data to observe: otherwise, why not (its models wait)",
        )
        for source in sources
    ] + [
        dg.AssetCheckSpec(
            FRESHNESS_CHECK,
            asset=source.key,
            description="dbt's warn_after / error_after, with dbt's verdict at each observation",
        )
        for source in sources
        if source.freshness_criteria
    ]

    # can_subset: a source with no data gets no observation (its output is optional).
    @dg.multi_observable_source_asset(
        name=f"observe_{project.name}_sources", specs=specs, check_specs=checks, can_subset=True
    )
    def observe(context: dg.AssetExecutionContext) -> Iterator:
        yield from observe_sources(context, sources, project, duckdb_file, speedups)

    keys = [source.key for source in sources]
    job = dg.define_asset_job(
        observation_job_name(project.name),
        selection=dg.AssetSelection.assets(*keys) | dg.AssetSelection.checks_for_assets(*keys),
    )
    schedule = dg.ScheduleDefinition(
        name=observation_schedule_name(project.name),
        job=job,
        cron_schedule=args.cron,
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus[args.default_status],
    )
    return dg.Definitions(
        assets=[observed_in_pool(observe, pool)], jobs=[job], schedules=[schedule]
    )


def _spec(source: Source) -> dg.AssetSpec:
    return dg.AssetSpec(
        source.key,
        description=source.node.get("description") or f"dbt source {source.name}",
        tags={OBSERVED_SOURCE_TAG: OBSERVED},
        kinds={"dbt"},
        metadata={"dagster_dbt/unique_id": source.unique_id},
    )


def observe_sources(
    context: dg.AssetExecutionContext,
    sources: Sequence[Source],
    project: DbtProject,
    duckdb_file: Path | None,
    speedups: bool = True,
) -> Iterator:
    """For each source: a passed `dbt_source_has_data` check if it has data (and its freshness
    check), with an observation when its data version is not the last one recorded; or only
    that check, failed, saying why."""
    by_dbt = [source for source in sources if source.uses_dbt_freshness]
    if by_dbt and duckdb_file is not None:
        # dbt-duckdb hangs, without an error, on a database whose folder does not exist (as on
        # a fresh clone before the first build): the builds' op makes it too.
        duckdb_file.parent.mkdir(parents=True, exist_ok=True)
    verdicts = dbt_source_freshness(project, by_dbt, speedups) if by_dbt else {}
    for source in sources:
        try:
            if source.uses_dbt_freshness:
                version, metadata, status = _from_dbt(verdicts, source)
            else:
                version, metadata, status = _fingerprint(source, project, duckdb_file), {}, None
        except NoData as why:
            context.log.warning(f"dbt source {source.name} has no data to observe: {why}")
            yield _has_data(source, why=str(why))
            continue
        if version != _last_data_version(context.instance, source.key):
            yield dg.ObserveResult(
                asset_key=source.key, data_version=dg.DataVersion(version), metadata=metadata
            )
        yield _has_data(source, why=None)
        if source.freshness_criteria:
            yield _freshness_result(source, status, metadata)


def _last_data_version(instance: dg.DagsterInstance, key: dg.AssetKey) -> str | None:
    """The data version of the source's last observation, if any."""
    records = instance.fetch_observations(key, limit=1).records
    return records[0].asset_observation.tags.get(DATA_VERSION_TAG) if records else None


def _has_data(source: Source, why: str | None) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=source.key,
        check_name=HAS_DATA_CHECK,
        passed=why is None,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={} if why is None else {"why not": why},
        description=None if why is None else f"No data: {why}. The models below it wait.",
    )


def dbt_source_freshness(
    project: DbtProject, sources: Sequence[Source], speedups: bool = True
) -> dict[str, dict[str, Any] | str]:
    """`dbt source freshness` on `sources`: unique id -> dbt's result for it (`max_loaded_at`,
    `status`), or the error dbt logged for it."""
    dbt = DbtCliResource(project_dir=project)
    if speedups:
        skip_dbt_version_probe(dbt)
    # One argument: dagster-dbt keeps only the first value after `--select` there, and moves
    # the others before it, where dbt refuses them.
    selection = " ".join(f"source:{source.name}" for source in sources)
    invocation = dbt.cli(["source", "freshness", "--select", selection], raise_on_error=False)
    errors: dict[str, str] = {}
    for event in invocation.stream_raw_events():
        info, data = event.raw_event.get("info", {}), event.raw_event.get("data", {})
        unique_id = (data.get("node_info") or {}).get("unique_id")
        # dbt's RunResultError event carries the error itself (its progress line only "ERROR").
        if info.get("name") == "RunResultError" and unique_id:
            errors.setdefault(unique_id, info.get("msg", "error"))
    results_file = invocation.target_path / "sources.json"
    results = json.loads(results_file.read_text())["results"] if results_file.exists() else []
    verdicts: dict[str, dict[str, Any] | str] = dict(errors)
    verdicts.update({result["unique_id"]: result for result in results})
    return verdicts


def _from_dbt(
    verdicts: Mapping[str, dict[str, Any] | str], source: Source
) -> tuple[str, dict[str, Any], str]:
    verdict = verdicts.get(source.unique_id, "dbt source freshness gave no result")
    if isinstance(verdict, str):
        raise NoData(_one_line(verdict))
    loaded_at = verdict.get("max_loaded_at") or ""
    if not loaded_at or loaded_at.startswith(_NO_ROW):
        raise NoData("no row (dbt source freshness found no max_loaded_at)")
    metadata = {
        "max_loaded_at": loaded_at,
        "dbt freshness status": verdict["status"],
        "age seconds": dg.MetadataValue.float(float(verdict["max_loaded_at_time_ago_in_s"])),
    }
    return loaded_at, metadata, verdict["status"]


def _freshness_result(
    source: Source, status: str | None, metadata: Mapping[str, Any]
) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=source.key,
        check_name=FRESHNESS_CHECK,
        passed=status == "pass",
        severity=_FRESHNESS_SEVERITY.get(status or "", dg.AssetCheckSeverity.WARN),
        metadata={**metadata, **source.freshness_criteria},
    )


def _fingerprint(source: Source, project: DbtProject, duckdb_file: Path | None) -> str:
    location = source.external_location
    if location is not None:
        return _files_fingerprint(_file_pattern(location, source, project.project_dir))
    if duckdb_file is not None:
        return _duckdb_table_fingerprint(duckdb_file, source.node["relation_name"])
    raise NoData(
        "set loaded_at_field or loaded_at_query on the source: without them only DuckDB "
        "tables and files are observed"
    )


def _file_pattern(location: str, source: Source, project_dir: Path) -> str:
    """The glob of an `external_location`: a path, or the first quoted path of a function
    (`read_csv('landing/*.csv', ...)`), with dbt-duckdb's `{name}` placeholders filled."""
    quoted = re.search(r"'([^']+)'", location)
    pattern = (quoted.group(1) if quoted else location).format(
        name=source.node["name"], identifier=source.node.get("identifier") or source.node["name"]
    )
    return str(project_dir / pattern)


def _files_fingerprint(pattern: str) -> str:
    """The SHA-1 of each matching file's path, size and modification time (DuckDB's glob:
    `**` recurses, hidden files count, folders do not)."""
    files = sorted(
        path for path in glob.glob(pattern, recursive=True, include_hidden=True)
        if os.path.isfile(path)
    )  # fmt: skip
    if not files:
        raise NoData(f"no file matches {pattern}")
    digest = hashlib.sha1()
    for path in files:
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def _duckdb_table_fingerprint(duckdb_file: Path, relation: str) -> str:
    """The row count and the sum of the rows' hashes (a sum, not a XOR: equal rows would
    cancel out), read-only: the observation runs in the builds' pool."""
    import duckdb

    if not duckdb_file.exists():
        raise NoData(f"{duckdb_file} does not exist")
    with duckdb.connect(str(duckdb_file), read_only=True) as connection:
        try:
            rows, content = connection.execute(
                f"select count(*), sum(hash(t)::hugeint) from {relation} as t"
            ).fetchone()
        except duckdb.CatalogException as missing:
            raise NoData(_one_line(str(missing))) from None
    if rows == 0:
        raise NoData(f"{relation} has no row")
    return f"{rows}:{content}"


def _one_line(message: str) -> str:
    return " ".join(message.split())
