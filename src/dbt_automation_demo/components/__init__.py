"""The component library: the classes another Dagster project scaffolds and lists.

This package is the registry module, both for this project (`registry_modules` in
pyproject.toml) and for any project that installs the package (its
`dagster_dg_cli.registry_modules` entry point, as dagster-dbt registers its own), so
`dg list components` lists `dbt_automation_demo.components.CustomDbtComponent` and
`dbt_automation_demo.components.SafeScheduledJobComponent`.
"""

from dbt_automation_demo.components.custom_dbt_component import CustomDbtComponent
from dbt_automation_demo.components.safe_scheduled_job_component import (
    SafeScheduledJobComponent,
)

__all__ = ["CustomDbtComponent", "SafeScheduledJobComponent"]
