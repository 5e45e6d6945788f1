"""`dagster/materialization` comes from dbt's config and selects assets by what they are."""

import json
import re
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from dbt_automation_demo import replay
from dbt_automation_demo.automation import overdue_after_grace
from dbt_automation_demo.components.custom_dbt_component import AutomationSensorArgs
from harness import (
    EVERY_VIEW,
    REPO_ROOT,
    SEEDS,
    TABLES,
    Ticker,
    build_defs,
    copy_dagster_project,
    copy_dbt_project,
    dg_in,
    materialize,
    names,
    parse,
    readme_block,
)

FIXTURE = Path(__file__).parent / "fixtures" / "every_materialization"
DAILY_CRON_LINE = '  daily_cron: "0 6 * * *"'
TIMEZONE_LINE = "  cron_timezone: UTC"
SENSOR_STATUS_LINE = "    default_status: RUNNING"
VIEW_LABEL = "refresh on SQL change or parent update"


@pytest.fixture
def every_materialization(tmp_path, duckdb_file) -> Path:
    """A dbt project with one seed, view, table, incremental, snapshot and ephemeral model."""
    project = copy_dbt_project(tmp_path / "every_materialization", source=FIXTURE)
    parse(project)
    return project


def tags_and_labels(defs: dg.Definitions) -> dict[str, tuple[str, str]]:
    graph = defs.resolve_asset_graph()
    return {
        key.to_user_string(): (
            graph.get(key).tags["dagster/materialization"],
            graph.get(key).automation_condition.get_label(),
        )
        for key in graph.materializable_asset_keys
    }


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        ("tag:dagster/materialization=table", TABLES),
        ("kind:dbt and not tag:dagster/materialization=view", SEEDS | TABLES),
        ("tag:dagster/materialization=view", EVERY_VIEW),
    ],
)
def test_design_selection_strings_select_exactly(shipped_defs, selection, expected):
    resolved = dg.AssetSelection.from_string(selection).resolve(shipped_defs.resolve_asset_graph())
    assert names(resolved) == expected


def test_design_minus_syntax_is_not_a_selection_string_any_more():
    # The design wrote "kind:dbt - tag:..."; today's selection syntax spells it "and not".
    with pytest.raises(Exception, match="Invalid selection string"):
        dg.AssetSelection.from_string("kind:dbt - tag:dagster/materialization=view")


def test_each_materialization_is_its_tag_and_ephemeral_is_no_asset(every_materialization):
    defs = build_defs(every_materialization)
    daily = "refresh on cron '0 6 * * *' (UTC)"
    assert tags_and_labels(defs) == {
        "a_seed": ("seed", daily),
        "a_view": ("view", VIEW_LABEL),
        "a_table": ("table", daily),
        "an_incremental": ("incremental", daily),
        "a_snapshot": ("snapshot", daily),
        "a_finance_table": ("table", daily),
    }


def test_cron_by_tag_and_by_folder_override_the_daily_cron(every_materialization):
    defs = build_defs(
        every_materialization,
        cron_by_tag={"critical": "*/15 * * * *", "batch": "0 4 * * *"},
        cron_by_path={"finance": "0 * * * *"},
    )
    labels = {name: label for name, (_, label) in tags_and_labels(defs).items()}
    assert labels == {
        "a_seed": "refresh on cron '0 6 * * *' (UTC)",
        "a_view": VIEW_LABEL,
        "a_table": "refresh on cron '*/15 * * * *' (UTC)",
        "an_incremental": "refresh on cron '0 4 * * *' (UTC)",
        "a_snapshot": "refresh on cron '0 6 * * *' (UTC)",
        "a_finance_table": "refresh on cron '0 * * * *' (UTC)",
    }
    graph = defs.resolve_asset_graph()
    freshness = {
        key.to_user_string(): graph.get(key).freshness_policy
        for key in graph.materializable_asset_keys
    }
    assert freshness == {
        "a_seed": overdue_after_grace("0 6 * * *", "UTC"),
        "a_view": None,
        "a_table": overdue_after_grace("*/15 * * * *", "UTC"),
        "an_incremental": overdue_after_grace("0 4 * * *", "UTC"),
        "a_snapshot": overdue_after_grace("0 6 * * *", "UTC"),
        "a_finance_table": overdue_after_grace("0 * * * *", "UTC"),
    }


def test_critical_table_refreshes_every_quarter_hour_and_the_rest_keep_their_cron(
    every_materialization, instance, after_daily_tick
):
    defs = build_defs(every_materialization, cron_by_tag={"critical": "*/15 * * * *"})
    materialize(defs, instance, ["a_seed", "a_view", "a_table", "an_incremental", "a_snapshot",
                                 "a_finance_table"])  # fmt: skip
    ticker = Ticker(defs, instance, after_daily_tick.replace(minute=1))
    assert ticker.tick() == set()  # 09:02
    assert ticker.tick_at(after_daily_tick.replace(minute=15)) == {"a_table"}
    assert ticker.tick_at(after_daily_tick.replace(minute=29)) == set()
    assert ticker.tick_at(after_daily_tick.replace(minute=30)) == {"a_table"}


def test_one_sensor_evaluates_every_asset_in_the_code_server_by_default(every_materialization):
    defs = build_defs(every_materialization)
    assert sensor_targets(defs) == {
        "every_materialization_automation_sensor": {
            "a_seed", "a_view", "a_table", "an_incremental", "a_snapshot", "a_finance_table",
        },
    }  # fmt: skip
    # AUTOMATION: evaluated in the code server (AUTO_MATERIALIZE would be the daemon).
    assert {sensor.sensor_type.name for sensor in defs.sensors} == {"AUTOMATION"}


def test_split_by_folder_gives_each_top_folder_a_sensor_of_its_own(every_materialization):
    defs = build_defs(
        every_materialization,
        automation_sensor=AutomationSensorArgs(name="auto", split_by_folder=True),
    )
    assert sensor_targets(defs) == {
        "auto_seeds": {"a_seed"},
        "auto_models": {"a_view", "a_table", "an_incremental"},
        "auto_finance": {"a_finance_table"},
        "auto_snapshots": {"a_snapshot"},
    }


def test_max_assets_per_sensor_splits_a_folder_into_numbered_sensors(every_materialization):
    defs = build_defs(
        every_materialization,
        automation_sensor=AutomationSensorArgs(
            name="auto", split_by_folder=True, max_assets_per_sensor=2
        ),
    )
    assert sensor_targets(defs) == {
        "auto_seeds": {"a_seed"},
        "auto_models_1": {"a_table", "a_view"},
        "auto_models_2": {"an_incremental"},
        "auto_finance": {"a_finance_table"},
        "auto_snapshots": {"a_snapshot"},
    }


def test_a_project_over_max_assets_per_sensor_gets_numbered_sensors_by_dbt_unique_id(
    every_materialization,
):
    defs = build_defs(
        every_materialization,
        automation_sensor=AutomationSensorArgs(name="auto", max_assets_per_sensor=4),
    )
    assert sensor_targets(defs) == {
        "auto_1": {"a_finance_table", "a_table", "a_view", "an_incremental"},  # model.*
        "auto_2": {"a_seed", "a_snapshot"},  # seed.*, snapshot.*
    }


def sensor_targets(defs: dg.Definitions) -> dict[str, set[str]]:
    graph = defs.resolve_asset_graph()
    return {sensor.name: names(sensor.asset_selection.resolve(graph)) for sensor in defs.sensors}


def test_daily_cron_and_timezone_are_attributes(every_materialization):
    defs = build_defs(every_materialization, daily_cron="30 2 * * *", cron_timezone="Europe/Berlin")
    assert tags_and_labels(defs)["a_seed"] == (
        "seed",
        "refresh on cron '30 2 * * *' (Europe/Berlin)",
    )


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (DAILY_CRON_LINE, '  daily_cron: "0 6 * *"', "`daily_cron` = '0 6 * *': '0 6 * *' is"),
        (
            TIMEZONE_LINE,
            "  cron_timezone: Mars/Olympus_Mons",
            "`cron_timezone` = 'Mars/Olympus_Mons': 'Mars/Olympus_Mons' is not a known IANA",
        ),
        (
            TIMEZONE_LINE,
            f'{TIMEZONE_LINE}\n  cron_by_tag: {{critical: "*/15 * *"}}',
            "`cron_by_tag.critical` = '*/15 * *': '*/15 * *' is not a valid cron string",
        ),
        (
            TIMEZONE_LINE,
            f'{TIMEZONE_LINE}\n  cron_by_path: {{marts/finance: "0 25 * * *"}}',
            "`cron_by_path.marts/finance` = '0 25 * * *': '0 25 * * *' is not a valid cron",
        ),
        (
            SENSOR_STATUS_LINE,
            f"{SENSOR_STATUS_LINE}\n    max_assets_per_sensor: 501",
            "`automation_sensor.max_assets_per_sensor` = 501: must be between 1 and 500",
        ),
    ],
    ids=["daily_cron", "cron_timezone", "cron_by_tag", "cron_by_path", "max_assets_per_sensor"],
)
def test_bad_attribute_fails_dg_check_defs_naming_file_attribute_and_value(
    tmp_path, old, new, message
):
    project = copy_dagster_project(tmp_path / "project")
    defs_yaml = project / "src" / "dbt_automation_demo" / "defs" / "analytics" / "defs.yaml"
    assert old in defs_yaml.read_text()
    defs_yaml.write_text(defs_yaml.read_text().replace(old, new))
    checked = dg_in(project, "check", "defs")
    output = checked.stdout + checked.stderr
    assert checked.returncode != 0
    # What a user reads: Dagster's tree of the project's defs.yaml files, the failing document
    # marked, then the component's own message with the attribute and the value.
    assert re.search(r"analytics\n.*defs\.yaml\[0\] \(CustomDbtComponent\) \(error\)", output)
    assert f"CustomDbtComponent attribute {message}" in output


PRECEDENCE_ATTRIBUTES = f"""{TIMEZONE_LINE}
  cron_by_tag:
    critical: "*/15 * * * *"
    batch: "0 4 * * *"
  cron_by_path:
    finance: "0 * * * *"
    finance/reports: "0 2 * * *"
"""
PRECEDENCE_MODELS = {
    # both tags: the first one cron_by_tag lists wins, whatever the model's own order
    "a_batch_and_critical_table.sql": "{{ config(materialized='table', "
    "tags=['batch', 'critical']) }} select 1 as id",
    # a tag beats a path
    "finance/a_critical_finance_table.sql": "{{ config(materialized='table', "
    "tags=['critical']) }} select 1 as id",
    # the longest matching path wins, nested folders included
    "finance/reports/a_report.sql": "{{ config(materialized='table') }} select 1 as id",
    # views ignore every cron, tag and path alike
    "finance/a_critical_finance_view.sql": "{{ config(materialized='view', "
    "tags=['critical']) }} select 1 as id",
}


def test_cron_precedence_read_from_defs_yaml(tmp_path):
    shipped = TIMEZONE_LINE + "\n"
    labels = labels_with_crons(tmp_path, PRECEDENCE_MODELS, shipped, PRECEDENCE_ATTRIBUTES)
    assert labels == {
        "a_seed": "refresh on cron '0 6 * * *' (UTC)",
        "a_view": VIEW_LABEL,
        "a_table": "refresh on cron '*/15 * * * *' (UTC)",
        "an_incremental": "refresh on cron '0 4 * * *' (UTC)",
        "a_snapshot": "refresh on cron '0 6 * * *' (UTC)",
        "a_finance_table": "refresh on cron '0 * * * *' (UTC)",
        "a_batch_and_critical_table": "refresh on cron '*/15 * * * *' (UTC)",
        "a_critical_finance_table": "refresh on cron '*/15 * * * *' (UTC)",
        "a_report": "refresh on cron '0 2 * * *' (UTC)",
        "a_critical_finance_view": VIEW_LABEL,
    }


README_CRON_MODELS = {  # one model for each line of the README's cron attributes
    "a_critical_table.sql": "{{ config(materialized='table', tags=['critical']) }} select 1 as id",
    "a_batch_table.sql": "{{ config(materialized='table', tags=['batch']) }} select 1 as id",
    "marts/finance/a_revenue_table.sql": "{{ config(materialized='table') }} select 1 as id",
    "a_daily_table.sql": "{{ config(materialized='table') }} select 1 as id",
}


def test_the_readmes_cron_attributes_pasted_into_defs_yaml_do_what_it_says(tmp_path):
    shipped = f'  daily_cron: "0 6 * * *"\n{TIMEZONE_LINE}\n'
    labels = labels_with_crons(
        tmp_path, README_CRON_MODELS, shipped, readme_block("cron-attributes")
    )
    assert {name: labels[name] for name in ("a_critical_table", "a_batch_table",
                                            "a_revenue_table", "a_daily_table", "a_view")} == {
        "a_critical_table": "refresh on cron '*/15 * * * *' (UTC)",
        "a_batch_table": "refresh on cron '0 4 * * *' (UTC)",
        "a_revenue_table": "refresh on cron '0 * * * *' (UTC)",
        "a_daily_table": "refresh on cron '0 6 * * *' (UTC)",
        "a_view": VIEW_LABEL,
    }  # fmt: skip


def labels_with_crons(folder, models: dict[str, str], shipped: str, crons: str) -> dict[str, str]:
    """Each asset's policy label, as `dg list defs` shows it, in a copy of the project around
    the fixture dbt project plus `models`, with `shipped` replaced by `crons` in defs.yaml."""
    project = replay.copy_dagster_project(REPO_ROOT, folder / "project", dbt_project=FIXTURE)
    for path, sql in models.items():
        (project / "analytics_dbt" / "models" / path).parent.mkdir(parents=True, exist_ok=True)
        (project / "analytics_dbt" / "models" / path).write_text(sql + "\n")
    defs_yaml = project / "src" / "dbt_automation_demo" / "defs" / "analytics" / "defs.yaml"
    assert shipped in defs_yaml.read_text()
    defs_yaml.write_text(defs_yaml.read_text().replace(shipped, crons))
    listed = dg_in(project, "list", "defs", "--json")
    assert listed.returncode == 0, listed.stderr[-3000:]
    return {
        asset["asset_key"]: asset["automation_condition"]["label"]
        for asset in json.loads(listed.stdout)["assets"]
    }


@pytest.mark.parametrize(
    ("cron", "deadline"),
    [("0 6 * * *", "30 6 * * *"), ("45 * * * *", "15 * * * *"), ("0 4 * * 1-5", "30 4 * * 1-5")],
)
def test_a_crons_freshness_deadline_is_its_tick_plus_the_grace(cron, deadline):
    policy = overdue_after_grace(cron, "Europe/Berlin")
    assert (policy.deadline_cron, policy.lower_bound_delta, policy.timezone) == (
        deadline, timedelta(minutes=30), "Europe/Berlin",
    )  # fmt: skip


def test_a_cron_whose_shifted_tick_is_no_cron_gets_a_time_window_of_its_interval_and_grace():
    assert overdue_after_grace("50 23 * * *", "UTC") == dg.FreshnessPolicy.time_window(
        fail_window=timedelta(days=1, minutes=30)
    )
    assert overdue_after_grace("*/10 * * * *", "UTC").lower_bound_delta == timedelta(minutes=10)
