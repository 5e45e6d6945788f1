"""Synthetic dbt projects of a given size, generated deterministically from a seed.

The shape follows the demo (and most real projects): seeds and a few sources, a staging view
over each of them, intermediate views over staging, and mart tables that join several upstream
models (fan-in), some of them incremental. Half the models are views, half are tables.
"""

import random
from dataclasses import dataclass
from pathlib import Path

PROJECT_NAME = "synthetic"
SEEDS_PER_100_MODELS = 5
INCREMENTAL_SHARE = 0.2
MAX_FAN_IN = 4


@dataclass(frozen=True)
class ProjectShape:
    """How many of each node a generated project has."""

    seeds: int
    sources: int
    views: int
    tables: int
    incrementals: int

    @property
    def models(self) -> int:
        return self.views + self.tables + self.incrementals


def shape_for(models: int) -> ProjectShape:
    views = models // 2
    non_views = models - views
    incrementals = int(non_views * INCREMENTAL_SHARE)
    return ProjectShape(
        seeds=max(2, models * SEEDS_PER_100_MODELS // 100),
        sources=max(1, models // 500),
        views=views,
        tables=non_views - incrementals,
        incrementals=incrementals,
    )


def generate_project(destination: Path, models: int, seed: int = 0) -> ProjectShape:
    """Write a dbt project of `models` models into `destination`; one seed, one set of files."""
    rng = random.Random(seed)
    shape = shape_for(models)
    destination.mkdir(parents=True)
    _write(destination / "dbt_project.yml", _DBT_PROJECT)
    _write(destination / "profiles.yml", _PROFILES)

    seeds = [f"seed_{i:05d}" for i in range(shape.seeds)]
    for name in seeds:
        _write(destination / "seeds" / f"{name}.csv", "id,value\n1,10\n2,20\n")
    sources = [f"events_{i:03d}" for i in range(shape.sources)]
    _write(destination / "models" / "staging" / "sources.yml", _sources_yml(sources))

    upstream_refs = [f"{{{{ ref('{name}') }}}}" for name in seeds]
    upstream_refs += [f"{{{{ source('raw', '{name}') }}}}" for name in sources]
    staging = [f"stg_{i:05d}" for i in range(len(upstream_refs))]
    for name, relation in zip(staging, upstream_refs, strict=True):
        _write_model(destination, "staging", name, [relation])

    # The remaining views read one or two staging or earlier intermediate views.
    views = list(staging)
    for i in range(shape.views - len(staging)):
        name = f"int_{i:05d}"
        _write_model(
            destination, "intermediate", name, _refs(rng.sample(views, k=min(2, len(views))))
        )
        views.append(name)

    # Marts join up to MAX_FAN_IN models: views, and earlier marts (a few layers deep).
    marts: list[str] = []
    kinds = ["incremental"] * shape.incrementals + ["table"] * shape.tables
    rng.shuffle(kinds)
    for i, kind in enumerate(kinds):
        name = f"{'fct' if kind == 'incremental' else 'mart'}_{i:05d}"
        pool = views + marts[-50:]
        parents = rng.sample(pool, k=rng.randint(1, min(MAX_FAN_IN, len(pool))))
        _write_model(destination, "marts", name, _refs(parents), incremental=kind == "incremental")
        marts.append(name)
    return shape


MARTS_PER_SOURCE = 0.2
RAW_SCHEMA = "raw"


def generate_sources_project(destination: Path, sources: int, seed: int = 0) -> list[str]:
    """Write a dbt project that starts from `sources` warehouse tables loaded outside dbt, as
    an EL tool loads them: each source with dbt's `loaded_at_field` and freshness, a staging
    view over each, and a mart table per five sources joining up to MAX_FAN_IN views. Returns
    the source tables' names (load them with `load_raw_tables`)."""
    rng = random.Random(seed)
    destination.mkdir(parents=True)
    _write(destination / "dbt_project.yml", _DBT_PROJECT)
    _write(destination / "profiles.yml", _PROFILES)
    tables = [f"events_{i:05d}" for i in range(sources)]
    _write(destination / "models" / "staging" / "sources.yml", _loaded_sources_yml(tables))
    views = [f"stg_{table}" for table in tables]
    for view, table in zip(views, tables, strict=True):
        _write_model(destination, "staging", view, [f"{{{{ source('{RAW_SCHEMA}', '{table}') }}}}"])
    for i in range(max(1, int(sources * MARTS_PER_SOURCE))):
        parents = rng.sample(views, k=rng.randint(1, min(MAX_FAN_IN, len(views))))
        _write_model(destination, "marts", f"mart_{i:05d}", _refs(parents))
    return tables


def load_raw_tables(duckdb_file: Path, tables: list[str]) -> None:
    """Create each source table in `duckdb_file`, one row loaded now (what `loaded_at_field`
    reads)."""
    import duckdb

    duckdb_file.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(duckdb_file)) as connection:
        connection.execute(f"create schema if not exists {RAW_SCHEMA}")
        for table in tables:
            connection.execute(
                f"create or replace table {RAW_SCHEMA}.{table} as "
                "select 1 as id, 10 as value, current_timestamp as loaded_at"
            )


def _refs(models: list[str]) -> list[str]:
    return [f"{{{{ ref('{name}') }}}}" for name in models]


def _write_model(
    project: Path, folder: str, name: str, relations: list[str], incremental: bool = False
) -> None:
    first, *others = relations
    joins = "".join(f"\njoin {relation} as r{i} using (id)" for i, relation in enumerate(others))
    config = "{{ config(materialized='incremental', unique_key='id') }}\n" if incremental else ""
    _write(
        project / "models" / folder / f"{name}.sql",
        f"{config}select r.id, r.value\nfrom {first} as r{joins}\n",
    )


def _sources_yml(tables: list[str]) -> str:
    listed = "".join(f"      - name: {table}\n" for table in tables)
    return f"version: 2\nsources:\n  - name: raw\n    tables:\n{listed}"


def _loaded_sources_yml(tables: list[str]) -> str:
    listed = "".join(f"      - name: {table}\n" for table in tables)
    return (
        f"version: 2\nsources:\n  - name: {RAW_SCHEMA}\n    config:\n"
        "      loaded_at_field: loaded_at\n"
        "      freshness:\n        warn_after: {count: 1, period: day}\n"
        f"    tables:\n{listed}"
    )


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


_DBT_PROJECT = f"""\
name: {PROJECT_NAME}
version: "1.0.0"
config-version: 2
profile: {PROJECT_NAME}
models:
  {PROJECT_NAME}:
    staging:
      +materialized: view
    intermediate:
      +materialized: view
    marts:
      +materialized: table
flags:
  send_anonymous_usage_stats: false
"""

_PROFILES = f"""\
{PROJECT_NAME}:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: "{{{{ env_var('DBT_DUCKDB_PATH', 'data/{PROJECT_NAME}.duckdb') }}}}"
      threads: 1
"""
