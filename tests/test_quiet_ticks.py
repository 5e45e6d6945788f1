"""A tick on which nothing happened is skipped by the shipped sensors, as the daemon runs them.

The sensors are evaluated as the daemon's code server evaluates them (`evaluate_tick` on the
shipped definitions, each sensor on its own cursor). `tests/test_differential.py` proves the
skipping requests what evaluating every tick does, on random instance states; these tests pin
down the scenarios: what skips, and what ends the skipping.
"""

from datetime import datetime, timedelta

import dagster as dg
import pytest

from dbt_automation_demo.components.custom_dbt_component import AutomationSensorArgs
from dbt_automation_demo.internals.quiet_ticks import SkipsQuietTicks
from dbt_automation_demo.replay import build_defs
from harness import SEEDS, TABLES, sensor_tick


class SensorTicks:
    """Every automation sensor of the definitions, through its own evaluation, on its own
    cursor: per tick, which sensors skipped, and what was requested."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance, now: datetime):
        self.repository = defs.get_repository_def()
        self.instance, self.now = instance, now
        self.cursors = {sensor.name: None for sensor in self.repository.sensor_defs}

    def tick(self, after: timedelta = timedelta(minutes=1)) -> tuple[set[str], set[str]]:
        """(the sensors that skipped the tick, the assets requested)"""
        self.now += after
        skipped, requested = set(), set()
        for sensor in self.repository.sensor_defs:
            cursor = self.cursors[sensor.name]
            data = sensor_tick(self.repository, sensor, self.instance, cursor, self.now)
            if data.cursor == cursor:
                skipped.add(sensor.name)
            self.cursors[sensor.name] = data.cursor
            requested |= {
                key.to_user_string()
                for request in data.run_requests or []
                for key in request.asset_selection or []
            }
        return skipped, requested

    def settle(self) -> None:
        """Ticks until every sensor skips (the third quiet tick at the latest)."""
        for _ in range(3):
            skipped, _ = self.tick()
        assert skipped == set(self.cursors), skipped


@pytest.fixture
def ticks(dbt_project, instance, before_daily_tick) -> SensorTicks:
    """The shipped sensors (split by folder) over an instance where everything was built and
    tested."""
    by_folder = AutomationSensorArgs(name="auto", split_by_folder=True)
    defs = build_defs(dbt_project, speedups=True, automation_sensor=by_folder)
    graph = defs.resolve_asset_graph()
    for key in graph.materializable_asset_keys:
        instance.report_runless_asset_event(dg.AssetMaterialization(key))
    for check in graph.asset_check_keys:  # and every test passed
        passed = dg.AssetCheckEvaluation(
            asset_key=check.asset_key, check_name=check.name, passed=True
        )
        instance.report_runless_asset_event(passed)
    ticks = SensorTicks(defs, instance, before_daily_tick)
    ticks.settle()
    return ticks


def test_with_the_speedups_every_shipped_sensor_skips_quiet_ticks(dbt_project) -> None:
    sensors = build_defs(dbt_project, speedups=True).sensors
    assert sensors and all(isinstance(sensor, SkipsQuietTicks) for sensor in sensors)
    stock = build_defs(dbt_project, speedups=False).sensors
    assert stock and not any(isinstance(sensor, SkipsQuietTicks) for sensor in stock)


def test_a_quiet_tick_is_skipped_and_a_materialization_ends_it(ticks, instance) -> None:
    assert ticks.tick() == ({"auto_seeds", "auto_staging", "auto_marts"}, set())
    instance.report_runless_asset_event(dg.AssetMaterialization("raw_orders"))
    # Every sensor evaluates (an event, of any asset), and the view over the seed is requested.
    assert ticks.tick() == (set(), {"stg_orders"})


def test_a_cron_tick_ends_the_skipping(ticks) -> None:
    """The daily tick passes between two ticks: the sensors whose policies read its cron
    evaluate, and request the seeds and tables; the views' sensor reads no cron, and skips."""
    assert ticks.tick(after=timedelta(hours=1)) == ({"auto_staging"}, SEEDS | TABLES)


def test_a_sensor_copied_by_the_definitions_still_skips_quiet_ticks() -> None:
    """Dagster copies sensors to update their metadata; the copy is the same sensor."""
    sensor = SkipsQuietTicks(
        "auto",
        target=dg.AssetSelection.groups("staging"),
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        run_tags={"team": "data"},
    )
    copied = sensor.with_attributes(metadata={**sensor.metadata, "owner": "data"})
    assert isinstance(copied, SkipsQuietTicks)
    assert (copied.name, copied.asset_selection, copied.minimum_interval_seconds) == (
        "auto", sensor.asset_selection, 30,
    )  # fmt: skip
    assert (copied.default_status, copied.run_tags, copied.sensor_type) == (
        dg.DefaultSensorStatus.RUNNING, {"team": "data"}, sensor.sensor_type,
    )  # fmt: skip
    assert copied.metadata == {**sensor.metadata, "owner": dg.TextMetadataValue("data")}
