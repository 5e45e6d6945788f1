"""The DuckDB file, released by the process that read metadata through dbt's adapter.

A fix of dbt-duckdb's process-wide connection (a private class attribute), not a speedup: it
runs with the component's `speedups: false` too (docs/internals.md).
"""


def release_duckdb_file() -> None:
    """Close the DuckDB connection that fetching metadata left open in this process.

    dagster-dbt reads row counts and column schemas through dbt's DuckDB adapter in the run's
    own process, and the adapter keeps that connection (and DuckDB's file lock) for the life of
    the process. In a long-lived process (in-process execution, tests) the next dbt run, a
    separate process, would then fail with "Could not set lock on file".
    """
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with DuckDBConnectionManager._LOCK:
        if DuckDBConnectionManager._ENV is not None:
            DuckDBConnectionManager._ENV.close()
            DuckDBConnectionManager._ENV = None
