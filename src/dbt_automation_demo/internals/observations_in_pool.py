"""Observable assets whose observation runs in a concurrency pool.

Dagster's ``multi_observable_source_asset`` takes no ``pool`` (``@multi_asset`` does), so an
observation that reads the DuckDB file would run beside a dbt build that writes it, and one of
them would fail on DuckDB's file lock. Here the decorator's op is rebuilt with the pool, from
Dagster's public ``OpDefinition`` and ``AssetsDefinition`` constructors and the definition's
own ``get_attributes_dict()`` (undocumented): the queue then runs the observations one at a
time with the builds. ``tests/test_source_observations.py`` checks the job's pool, so a Dagster
release that changes these fails there.
"""

import dagster as dg


def observed_in_pool(assets_def: dg.AssetsDefinition, pool: str | None) -> dg.AssetsDefinition:
    """`assets_def` (from ``multi_observable_source_asset``), its op in `pool`."""
    op = assets_def.node_def
    if pool is None or not isinstance(op, dg.OpDefinition):
        return assets_def
    in_pool = dg.OpDefinition(
        compute_fn=op.compute_fn,
        name=op.name,
        ins=op.ins,
        outs=op.outs,
        description=op.description,
        required_resource_keys=set(op.required_resource_keys),
        tags=op.tags,
        pool=pool,
    )
    return dg.AssetsDefinition(**{**assets_def.get_attributes_dict(), "node_def": in_pool})
