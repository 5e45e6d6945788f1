"""A run that succeeds logs no warning for column lineage that cannot be resolved.

`internals/lineage_log.py` turns dagster-dbt's warning (with sqlglot's traceback) into one INFO
line. This test is also its guard: it fails if dagster-dbt stops logging that warning, or logs
it in other words.
"""

import logging

import dagster as dg
import pytest

from dbt_automation_demo.internals.lineage_log import (
    DAGSTER_LOGGER,
    LINEAGE_NOT_BUILT,
    unresolved_lineage_as_info,
)
from harness import add_a_landing_zone, land, materialize, reload_defs

pytestmark = [
    pytest.mark.usefixtures("dbt_from_a_preloaded_process"),  # tests/preloaded_dbt.py
    pytest.mark.every_python,  # a run through the component: dbt's events, metadata, the log
]


class WhatDagsterDbtLogged(logging.Filter):
    """Each record of Dagster's logger as dagster-dbt logs it (added before the component's
    filter, so it sees the record first)."""

    def __init__(self):
        super().__init__()
        self.records: list[tuple[int, str]] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append((record.levelno, record.getMessage()))
        return True


def test_column_lineage_that_cannot_be_resolved_is_one_info_line_not_a_warning(dbt_project):
    """stg_refunds reads a dbt-duckdb source given as a file path: sqlglot cannot resolve its
    columns. stg_payments reads one through `read_csv(...)`, whose lineage is resolved."""
    add_a_landing_zone(dbt_project)
    land(dbt_project, "payments", 1)
    land(dbt_project, "refunds", 1)
    defs = reload_defs(dbt_project, include_metadata=["row_count", "column_metadata"])
    logged, logger = WhatDagsterDbtLogged(), logging.getLogger(DAGSTER_LOGGER)
    logger.addFilter(logged)
    try:
        with dg.instance_for_test() as instance:
            result = materialize(defs, instance, ["stg_payments", "stg_refunds"])
            entries = instance.all_logs(result.run_id)
    finally:
        logger.removeFilter(logged)

    # What dagster-dbt logs, and why the component's filter is there.
    assert [
        message.split("\n")[0]
        for level, message in logged.records
        if level == logging.WARNING and LINEAGE_NOT_BUILT in message
    ] == [
        f"{LINEAGE_NOT_BUILT} `models/staging/stg_refunds.sql`. Lineage metadata will not be "
        "included in the event."
    ]
    # What the run logs: no warning, one line that says it.
    assert [entry.message for entry in entries if entry.level >= logging.WARNING] == []
    said = [entry.message for entry in entries if "column lineage of" in entry.message]
    assert said == [
        "column lineage of models/staging/stg_refunds.sql not recorded: Column 'order_id' could "
        "not be resolved. Line: 1, Col: 15"
    ]
    metadata = {
        event.asset_key.to_user_string(): set(event.materialization.metadata)
        for event in result.get_asset_materialization_events()
    }
    assert {name for name, keys in metadata.items() if "dagster/column_lineage" in keys} == {
        "stg_payments"
    }
    assert {name for name, keys in metadata.items() if "dagster/column_schema" in keys} == {
        "stg_payments",
        "stg_refunds",
    }


def test_the_lineage_filter_leaves_every_other_record_as_it_is():
    kept = WhatDagsterDbtLogged()
    logger = logging.getLogger(DAGSTER_LOGGER)
    with unresolved_lineage_as_info():
        logger.addFilter(kept)  # after the component's: sees what it let through
        try:
            logger.warning("An error occurred while fetching row count for model.x.y.")
            logger.error(f"{LINEAGE_NOT_BUILT} `models/x.sql`.")
        finally:
            logger.removeFilter(kept)
    assert kept.records == [
        (logging.WARNING, "An error occurred while fetching row count for model.x.y."),
        (logging.ERROR, f"{LINEAGE_NOT_BUILT} `models/x.sql`."),
    ]
