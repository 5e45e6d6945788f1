"""The project's assets spread over several automation sensors: what each sensor requests.

Each sensor evaluates only its own assets, on its own cursor, as the daemon runs them. What a
sensor cannot see is another sensor's requests on the same tick (Dagster's
`will_be_requested()` is per evaluation): these tests pin down what that changes.
"""

import json
import re
from datetime import datetime, timedelta

import dagster as dg

from dbt_automation_demo.components.custom_dbt_component import AutomationSensorArgs
from harness import (
    EVERY_VIEW,
    SEEDS,
    TABLES,
    VIEWS,
    build_defs,
    copy_dagster_project,
    dg_in,
    end_run,
    keys,
    names,
    readme_block,
    start_run,
)

BY_FOLDER = AutomationSensorArgs(name="auto", split_by_folder=True)


class SensorTickers:
    """Each automation sensor of `defs`, evaluated alone, on its own cursor."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance, now: datetime):
        self.defs, self.instance, self.now = defs, instance, now
        self.sensors = {sensor.name: sensor for sensor in defs.sensors}
        self.cursors = dict.fromkeys(self.sensors)

    def tick(self, sensor_name: str) -> set[str]:
        result = dg.evaluate_automation_conditions(
            defs=self.defs,
            instance=self.instance,
            asset_selection=self.sensors[sensor_name].asset_selection,
            evaluation_time=self.now,
            cursor=self.cursors[sensor_name],
        )
        self.cursors[sensor_name] = result.cursor
        # The assets requested, as `Ticker.tick` returns them (a test on several models is a
        # check the sensor may request too: tests/test_multi_model_tests.py).
        return {
            r.key.to_user_string()
            for r in result.results
            if isinstance(r.key, dg.AssetKey) and r.true_subset.size
        }

    def tick_all(self, after: timedelta = timedelta(minutes=1)) -> dict[str, set[str]]:
        self.now += after
        return {name: self.tick(name) for name in self.sensors}


def everything_built(defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
    for key in defs.resolve_asset_graph().materializable_asset_keys:
        instance.report_runless_asset_event(dg.AssetMaterialization(key))


def test_split_by_folder_each_sensor_evaluates_its_own_folder(dbt_project):
    defs = build_defs(dbt_project, automation_sensor=BY_FOLDER)
    graph = defs.resolve_asset_graph()
    assert {s.name: names(s.asset_selection.resolve(graph)) for s in defs.sensors} == {
        "auto_seeds": SEEDS,
        "auto_staging": EVERY_VIEW,
        "auto_marts": TABLES,
    }


def test_across_sensors_a_table_is_requested_at_the_tick_without_its_upstream_seeds(
    dbt_project, instance, before_daily_tick
):
    """One sensor requests the whole graph at 06:00, in one run (the tables test). Split by
    layer, the tables' sensor cannot see that the seeds will be requested: the tables are
    requested at once, and build from the views' previous data."""
    defs = build_defs(dbt_project, automation_sensor=BY_FOLDER)
    everything_built(defs, instance)
    sensors = SensorTickers(defs, instance, before_daily_tick)
    assert sensors.tick_all() == {"auto_seeds": set(), "auto_staging": set(), "auto_marts": set()}
    assert sensors.tick_all(after=timedelta(hours=1)) == {  # 06:01
        "auto_seeds": SEEDS,
        "auto_staging": set(),
        "auto_marts": TABLES,
    }
    for key in keys(*SEEDS):  # the seeds' run ends
        instance.report_runless_asset_event(dg.AssetMaterialization(key))
    assert sensors.tick_all() == {"auto_seeds": set(), "auto_staging": VIEWS, "auto_marts": set()}


def test_across_sensors_a_table_waits_for_a_parent_another_sensors_run_is_building(
    dbt_project, instance, before_daily_tick
):
    defs = build_defs(dbt_project, automation_sensor=BY_FOLDER)
    everything_built(defs, instance)
    sensors = SensorTickers(defs, instance, before_daily_tick)
    sensors.tick_all()
    run = start_run(defs, instance, ["stg_orders"])  # the staging sensor's run, still going
    assert sensors.tick_all(after=timedelta(hours=1)) == {  # 06:01
        "auto_seeds": SEEDS,
        "auto_staging": set(),
        "auto_marts": {"customer_segments"},  # its parent, customer_orders, is not running
    }
    end_run(instance, run)
    instance.report_runless_asset_event(dg.AssetMaterialization(dg.AssetKey("stg_orders")))
    assert sensors.tick_all() == {
        "auto_seeds": set(),
        "auto_staging": set(),
        "auto_marts": {"customer_orders", "order_summary"},
    }


def test_the_readmes_sensor_attributes_pasted_into_defs_yaml_split_by_folder(tmp_path):
    project = copy_dagster_project(tmp_path / "project")
    defs_yaml = project / "src" / "dbt_automation_demo" / "defs" / "analytics" / "defs.yaml"
    shipped = re.search(r"  automation_sensor:\n(    .*\n)+", defs_yaml.read_text()).group(0)
    defs_yaml.write_text(defs_yaml.read_text().replace(shipped, readme_block("sensor-splitting")))
    listed = dg_in(project, "list", "defs", "--json")
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert {sensor["name"] for sensor in json.loads(listed.stdout)["sensors"]} == {
        "analytics_automation_sensor_seeds",
        "analytics_automation_sensor_staging",
        "analytics_automation_sensor_marts",
    }
