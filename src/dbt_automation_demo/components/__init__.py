"""The project's reusable component classes (`registry_modules` in pyproject.toml points here,
so `dg list components` lists them): copy this folder into your own Dagster project."""
