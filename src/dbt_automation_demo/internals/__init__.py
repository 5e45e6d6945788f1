"""The fenced layer: everything that relies on a private name of dagster, dagster-dbt, dbt or
DuckDB lives in this package, and nothing outside it does (except the tie-safe `since` in
`dbt_automation_demo.conditions`, which is part of the pattern).

`docs/internals.md` lists every private name used here: the stock behaviour it replaces and
what that costs, the upstream issue, and the guard test (`tests/test_internals_guard.py`) that
fails, naming it, when a Dagster, dagster-dbt, dbt or DuckDB release changes it. The component's
`speedups: false` runs stock dagster-dbt paths and Dagster's built-in conditions instead of the
speedups here; `tests/test_internals_guard.py` checks that no other module uses a private name.
"""
