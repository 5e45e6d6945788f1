"""Column lineage that cannot be resolved is said in one INFO line, not a WARNING with a traceback.

dagster-dbt (0.29) builds each model's column lineage with sqlglot, from the model's compiled
SQL and its parents' columns. Where sqlglot cannot map a parent's columns, it raises, for
example for a dbt-duckdb source read from a file path (`meta: external_location:
"landing/refunds/*.csv"`, a relation that is a quoted string): "Column 'order_id' could not be
resolved", or, for a `select *` union over it, "projection_reachability requires star-free
selections". dagster-dbt then records the materialization without lineage, which is right, and
logs a WARNING with sqlglot's traceback, in every run that builds the model, although the run
succeeds and nothing is wrong with the data.

While a run's dbt events are read, this filter turns exactly that record into one INFO line
that names the model and sqlglot's reason ("column lineage of models/staging/stg_refunds.sql
not recorded: Column 'order_id' could not be resolved."). Every other record passes unchanged.
It matches dagster-dbt's message; `tests/test_lineage_log.py` fails if that message changes.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager

# dagster-dbt logs through `get_dagster_logger()`, which a run captures into its event log.
DAGSTER_LOGGER = "dagster.builtin"
# dagster-dbt 0.29's message, in `_fetch_column_metadata` and `_get_lineage_metadata`.
LINEAGE_NOT_BUILT = "An error occurred while building column lineage metadata for the dbt resource"


class _UnresolvedLineageAsInfo(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and LINEAGE_NOT_BUILT in record.getMessage():
            record.msg, record.args = _one_line(record), ()
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
            record.exc_info = record.exc_text = None
        return True


def _one_line(record: logging.LogRecord) -> str:
    model = record.getMessage().split(LINEAGE_NOT_BUILT, 1)[1].split("`")[1]
    error = record.exc_info[1] if record.exc_info else None
    reason = str(error).splitlines()[0] if error is not None else "sqlglot could not resolve it"
    return f"column lineage of {model} not recorded: {reason}"


@contextmanager
def unresolved_lineage_as_info() -> Iterator[None]:
    """While it is entered, dagster-dbt's warning that it could not build a model's column
    lineage is one INFO line instead (the module's docstring says why)."""
    logger, only = logging.getLogger(DAGSTER_LOGGER), _UnresolvedLineageAsInfo()
    logger.addFilter(only)
    try:
        yield
    finally:
        logger.removeFilter(only)
