"""`nox -s bench`: what the demo's patterns cost as a dbt project grows (README: Performance)."""
