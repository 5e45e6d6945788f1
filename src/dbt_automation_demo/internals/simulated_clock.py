"""Dagster's clock on a simulated time, for `nox -s demo` and the random sequences.

Dagster stamps every event with its own clock (`dagster._time`), and reuse reads those stamps
(a build's age against its lag tolerance), while the simulations evaluate the policies at a
simulated time. Dagster's test utility `freeze_time` stops the clock at one instant, so two
events of one run, or of two runs at the same simulated time, get the same stamp, which no real
run does (and which Dagster's check status reads as "not after"). This clock starts at the
simulated time and moves a microsecond at each reading, so events keep their order.
"""

from __future__ import annotations

import itertools
import unittest.mock
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from dagster._core.test_utils import get_freezable_log_manager

# Dagster reads its clock through these two functions (`dagster._time`), so tests can mock it;
# a run's events take their stamps from its log manager's records, which Dagster's freezable
# log manager stamps with that clock.
_TIMESTAMP = "dagster._time._mockable_get_current_timestamp"
_DATETIME = "dagster._time._mockable_get_current_datetime"
_LOG_MANAGER = "dagster._core.log_manager.DagsterLogManager"


class SimulatedClock:
    """Dagster's clock at a simulated time, a microsecond later at each reading since the
    clock was made (events recorded one after another), whatever time it is set to."""

    def __init__(self) -> None:
        self._readings = itertools.count(1)

    @contextmanager
    def at(self, now: datetime) -> Iterator[None]:
        """Dagster's clock reads `now` (plus the readings so far) inside the block."""

        def timestamp() -> float:
            return now.timestamp() + next(self._readings) / 1_000_000

        def current() -> datetime:
            return datetime.fromtimestamp(timestamp(), UTC)

        with (
            unittest.mock.patch(_TIMESTAMP, timestamp),
            unittest.mock.patch(_DATETIME, current),
            unittest.mock.patch(_LOG_MANAGER, get_freezable_log_manager()),
        ):
            yield
