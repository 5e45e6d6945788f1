"""Names Dagster uses and does not export, which the pattern needs: read cron schedules as
Dagster reads them, recognise an unfinished run or a failed check record, read an observation's
data version and a build's code version, and point a replayed
schedule at this process's code. Kept here so that a Dagster upgrade that moves one fails
tests/test_internals_guard.py, naming it, and nothing else."""

from dagster._core.definitions.data_version import CODE_VERSION_TAG, DATA_VERSION_TAG
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._utils.schedules import (
    cron_string_iterator,
    get_smallest_cron_interval,
    is_valid_cron_schedule,
    reverse_cron_string_iterator,
)

__all__ = [
    "CODE_VERSION_TAG",
    "DATA_VERSION_TAG",
    "NOT_FINISHED_STATUSES",
    "AssetCheckExecutionRecordStatus",
    "InProcessCodeLocationOrigin",
    "LoadableTargetOrigin",
    "RemoteJobOrigin",
    "RemoteRepositoryOrigin",
    "cron_string_iterator",
    "get_smallest_cron_interval",
    "is_valid_cron_schedule",
    "reverse_cron_string_iterator",
]
