"""The shipped project: eight assets and an observed source, the designed lineage, tags from
dbt, real runs on DuckDB."""

import importlib.util
import json
import os
import re
import shutil
import subprocess

import dagster as dg
import duckdb
import pytest
from dagster_dbt import DbtCliResource
from packaging.version import Version

from dbt_automation_demo.components.custom_dbt_component import CustomDbtComponent
from dbt_automation_demo.internals.blocking_tests import DBT_EXECUTABLE
from dbt_automation_demo.internals.dbt_cli import OWN_DBT_SCRIPTS, skip_dbt_version_probe
from harness import (
    ALL_ASSETS,
    EDGES,
    EVERY_VIEW,
    NEUTRAL_EDIT,
    REPO_ROOT,
    SEEDS,
    SHIPPED_DBT_PROJECT,
    SOURCES,
    TABLES,
    build_defs,
    copy_dagster_project,
    copy_dbt_project,
    dg_in,
    edit_logic,
    edit_sql,
    in_a_quick_start_shell,
    keys,
    materialize,
    names,
    readme_block,
    reload_defs,
    started_commands,
)

CUSTOM_DBT_COMPONENT = "dbt_automation_demo.components.custom_dbt_component.CustomDbtComponent"
SAFE_SCHEDULED_JOB_COMPONENT = (
    "dbt_automation_demo.components.safe_scheduled_job_component.SafeScheduledJobComponent"
)
SHIPPED_SCHEDULES = ("hourly_dbt_tables_job_schedule", "observe_analytics_dbt_sources_schedule")
# A second dbt project, as a user would add one: every materialization dbt has.
SECOND_DBT_PROJECT = REPO_ROOT / "tests" / "fixtures" / "every_materialization"
SECOND_PROJECTS_ASSETS = (
    "a_seed", "a_view", "a_table", "an_incremental", "a_snapshot", "a_finance_table",
)  # fmt: skip


def test_definitions_have_exactly_the_eight_assets_and_the_observed_source(shipped_defs):
    graph = shipped_defs.resolve_asset_graph()
    assert names(graph.materializable_asset_keys) == ALL_ASSETS
    assert names(graph.observable_asset_keys) == SOURCES
    assert names(graph.get_all_asset_keys()) == ALL_ASSETS | SOURCES


def test_lineage_is_exactly_the_designed_edges(shipped_defs):
    graph = shipped_defs.resolve_asset_graph()
    edges = {
        (parent.to_user_string(), key.to_user_string())
        for key in graph.get_all_asset_keys()
        for parent in graph.get(key).parent_keys
    }
    assert edges == EDGES


def test_materialization_tag_equals_dbt_config(shipped_defs):
    manifest = json.loads((SHIPPED_DBT_PROJECT / "target" / "manifest.json").read_text())
    configured = {
        node["name"]: node["config"]["materialized"]
        for node in manifest["nodes"].values()
        if node["resource_type"] in ("model", "seed")
    }
    graph = shipped_defs.resolve_asset_graph()
    tags = {
        key.to_user_string(): graph.get(key).tags["dagster/materialization"]
        for key in graph.materializable_asset_keys
    }
    assert tags == configured
    assert tags == {**dict.fromkeys(SEEDS, "seed"), **dict.fromkeys(EVERY_VIEW, "view"),
                    **dict.fromkeys(TABLES, "table")}  # fmt: skip


def test_every_asset_has_its_labelled_automation_condition(shipped_defs):
    graph = shipped_defs.resolve_asset_graph()
    labels = {
        key.to_user_string(): graph.get(key).automation_condition.get_label()
        for key in graph.materializable_asset_keys
    }
    view_label = "refresh on SQL change or parent update"
    daily_label = "refresh on cron '0 6 * * *' (UTC)"
    assert labels == {**dict.fromkeys(EVERY_VIEW, view_label),
                      **dict.fromkeys(SEEDS | TABLES, daily_label)}  # fmt: skip


def test_hourly_job_selects_exactly_the_three_tables(shipped_defs):
    job = shipped_defs.resolve_job_def("hourly_dbt_tables_job")
    assert names(job.asset_layer.selected_asset_keys) == TABLES


def test_automation_sensor_and_schedule_start_running(shipped_defs):
    sensor = shipped_defs.resolve_sensor_def("analytics_automation_sensor")
    schedules = [shipped_defs.resolve_schedule_def(name) for name in SHIPPED_SCHEDULES]
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert [schedule.default_status for schedule in schedules] == [
        dg.DefaultScheduleStatus.RUNNING
    ] * len(SHIPPED_SCHEDULES)
    assert sensor.asset_selection.resolve(shipped_defs.resolve_asset_graph()) == keys(*ALL_ASSETS)


def test_full_run_then_tables_only_then_one_table_on_a_fresh_duckdb_file(
    shipped_defs, instance, duckdb_file
):
    assert not duckdb_file.exists()
    assert materialize(shipped_defs, instance, ALL_ASSETS).success
    assert materialize(shipped_defs, instance, TABLES).success
    assert materialize(shipped_defs, instance, ["order_summary"]).success

    with duckdb.connect(str(duckdb_file), read_only=True) as con:
        customers = con.execute("select count(*) from customer_segments").fetchone()
        months = con.execute("select count(*) from order_summary").fetchone()
    assert (customers, months) == ((100,), (12,))


def test_a_view_alone_builds_before_the_model_its_relationship_test_reads(
    shipped_defs, instance, duckdb_file
):
    # stg_orders' relationships test reads stg_customers, and stg_customers' run would pick it
    # up with dbt's default (eager) indirect selection, failing while stg_orders does not exist.
    assert materialize(shipped_defs, instance, ["raw_customers"]).success
    result = materialize(shipped_defs, instance, ["stg_customers"])
    assert result.success
    checked = {check.asset_check_key.asset_key for check in result.get_asset_check_evaluations()}
    assert names(checked) == {"stg_customers"}


def test_dbt_data_tests_run_as_asset_checks_and_pass(shipped_defs, instance, duckdb_file):
    result = materialize(shipped_defs, instance, ALL_ASSETS)
    evaluations = result.get_asset_check_evaluations()
    declared = {  # the sources' checks are their observations'
        check
        for check in shipped_defs.resolve_asset_graph().asset_check_keys
        if check.asset_key not in keys(*SOURCES)
    }
    assert {evaluation.asset_check_key for evaluation in evaluations} == declared
    assert len(declared) == 28
    assert all(evaluation.passed for evaluation in evaluations)


def test_materializations_carry_row_counts_column_schemas_and_column_lineage(
    shipped_defs, instance, duckdb_file
):
    result = materialize(shipped_defs, instance, ALL_ASSETS)
    metadata = {
        event.asset_key.to_user_string(): event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    row_counts = {
        name: values["dagster/row_count"].value
        for name, values in metadata.items()
        if "dagster/row_count" in values
    }
    # dagster-dbt counts rows of tables and seeds; a view has no rows of its own to count.
    assert row_counts == {"raw_customers": 100, "raw_orders": 1000, "customer_orders": 100,
                          "customer_segments": 100, "order_summary": 12}  # fmt: skip
    assert {name for name, values in metadata.items() if "dagster/column_schema" in values} == (
        ALL_ASSETS
    )
    # dagster-dbt derives column lineage from each model's SQL; a seed has no SQL.
    assert {name for name, values in metadata.items() if "dagster/column_lineage" in values} == (
        ALL_ASSETS - {"raw_customers", "raw_orders"}
    )


def test_a_failed_model_fails_the_run_with_dbts_error_and_records_what_dbt_built(
    dbt_project, instance
):
    edit_sql(dbt_project, "customer_orders", "select no_such_column from {{ ref('stg_orders') }}\n")
    result = materialize(reload_defs(dbt_project), instance, ALL_ASSETS, raise_on_error=False)
    assert not result.success
    built = names(event.asset_key for event in result.get_asset_materialization_events())
    assert built == ALL_ASSETS - {"customer_orders", "customer_segments"}  # and its child
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    assert "no_such_column" in failure.step_failure_data.error.message


def test_a_run_in_a_copied_project_reuses_the_sessions_parse(
    dbt_project, instance, duckdb_file, monkeypatch
):
    """The DuckDB path is part of dbt's profile; the tests give it relative to the dbt project,
    as the session's parse did, so a run does not parse the project again. An absolute path to
    the same file changes the profile, and dbt says so."""
    defs = build_defs(dbt_project)
    assert materialize(defs, instance, ["raw_customers"]).success
    monkeypatch.setenv("DBT_DUCKDB_PATH", str(duckdb_file))
    assert materialize(defs, instance, ["raw_customers"]).success
    relative, absolute = sorted(dbt_project.glob("target/**/dbt.log"), key=os.path.getmtime)
    profile_changed = "Unable to do partial parsing because profile has changed"
    assert profile_changed not in relative.read_text()
    assert profile_changed in absolute.read_text()


def test_a_run_in_process_leaves_the_working_directory_as_it_was(
    shipped_defs, instance, duckdb_file
):
    # dbt's in-process set-up, which dagster-dbt uses for row counts, changes into the dbt
    # project; a later command in the same process must still find its own working directory.
    before = os.getcwd()
    assert materialize(shipped_defs, instance, ["raw_customers"]).success
    assert os.getcwd() == before


def test_a_run_starts_dbt_once_and_never_asks_its_version(shipped_defs, instance, duckdb_file):
    with started_commands() as commands:
        assert materialize(shipped_defs, instance, ["raw_customers"]).success
    dbt_commands = [command[:2] for command in commands if command[0] in OWN_DBT_SCRIPTS]
    assert dbt_commands == [[DBT_EXECUTABLE, "build"]]


def test_refreshing_the_components_state_parses_in_this_process_and_starts_no_dbt(
    tmp_path, monkeypatch
):
    """What `dg check defs` and `dg dev` do after an edit, with the project as defs.yaml gives
    it: dagster-dbt's preparer would start `dbt --version` and `dbt parse`; the parse runs in
    this process instead, and a second refresh in the same process sees the next edit."""
    project_dir = copy_dbt_project(tmp_path / "analytics_dbt")
    monkeypatch.chdir(tmp_path)  # as `dg` runs: in the Dagster project, beside the dbt project
    component = CustomDbtComponent.from_attributes_dict(attributes={"project": str(project_dir)})
    with started_commands() as commands:
        component.write_state_to_path(tmp_path / "state")
        edit_logic(project_dir, "stg_orders")
        component.write_state_to_path(tmp_path / "state")
    assert [command for command in commands if command[0] in OWN_DBT_SCRIPTS] == []
    manifest = json.loads((project_dir / "target" / "manifest.json").read_text())
    assert manifest["nodes"]["model.analytics_dbt.stg_orders"]["raw_code"].endswith(
        NEUTRAL_EDIT.rstrip()  # dbt keeps a model's code without its final newline
    )
    # dbt's artifacts and log stay in the dbt project, as with dagster-dbt's `dbt` process.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["analytics_dbt", "project", "state"]
    assert (project_dir / "target" / "dbt.log").exists()


def test_a_model_dbt_cannot_parse_fails_dg_check_defs_naming_its_file(tmp_path):
    project = copy_dagster_project(tmp_path)
    edit_sql(project / "analytics_dbt", "customer_orders", "select * from {{ ref('stg_orders' }}\n")
    checked = dg_in(project, "check", "defs")
    assert checked.returncode != 0
    assert "dbt parse failed" in checked.stderr + checked.stdout
    assert "models/marts/customer_orders.sql" in checked.stderr + checked.stdout


def test_the_dbt_version_given_to_dagster_dbt_is_the_one_dbt_reports():
    reported = subprocess.run(["dbt", "--version"], capture_output=True, text=True, check=True)
    installed = re.search(r"installed: (\d+\.\d+\.\d+)", reported.stdout).group(1)
    dbt = DbtCliResource(project_dir=str(SHIPPED_DBT_PROJECT))
    skip_dbt_version_probe(dbt)
    assert dbt.__dict__["_cli_version"] == Version(installed)


def test_committed_seeds_match_their_generator():
    spec = importlib.util.spec_from_file_location(
        "generate_seeds", SHIPPED_DBT_PROJECT / "seeds" / "generate_seeds.py"
    )
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    for name, text in generator.generate().items():
        assert (SHIPPED_DBT_PROJECT / "seeds" / name).read_text() == text, name


def test_dg_list_components_lists_both_of_the_projects_components():
    listed = subprocess.run(
        ["dg", "list", "components", "--json"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr[-3000:]
    ours = {
        item["key"].rsplit(".", 1)[1]
        for item in json.loads(listed.stdout)["items"]
        if item["key"].startswith("dbt_automation_demo.")
    }
    assert ours == {"CustomDbtComponent", "SafeScheduledJobComponent"}


def test_dg_scaffold_defs_adds_a_second_dbt_project_with_its_own_policies_and_sensor(tmp_path):
    project = copy_dagster_project(tmp_path / "project")
    shutil.copytree(SECOND_DBT_PROJECT, project / "second_dbt")
    for synced_from in ("uv.lock", "README.md"):  # `uv run` syncs the copy's .venv from them
        shutil.copy(REPO_ROOT / synced_from, project)
    scaffolded = in_a_quick_start_shell(readme_block("scaffold-second-instance"), cwd=project)
    assert scaffolded.returncode == 0, scaffolded.stderr[-3000:]
    checked = dg_in(project, "check", "defs")
    assert checked.returncode == 0, checked.stderr[-3000:]
    listed = dg_in(project, "list", "defs", "--json")
    assert listed.returncode == 0, listed.stderr[-3000:]
    defs = json.loads(listed.stdout)
    labels = {  # a source has no automation condition: it is observed, never materialized
        asset["asset_key"]: asset["automation_condition"]["label"]
        for asset in defs["assets"]
        if "automation_condition" in asset
    }
    assert {asset["asset_key"] for asset in defs["assets"]} - set(labels) == SOURCES
    daily = "refresh on cron '0 6 * * *' (UTC)"
    assert {name: labels[name] for name in SECOND_PROJECTS_ASSETS} == {
        "a_seed": daily,
        "a_view": "refresh on SQL change or parent update",
        "a_table": daily,
        "an_incremental": daily,
        "a_snapshot": daily,
        "a_finance_table": daily,
    }
    assert ALL_ASSETS | set(SECOND_PROJECTS_ASSETS) == set(labels)
    assert {sensor["name"] for sensor in defs["sensors"]} == {
        "analytics_automation_sensor",  # the shipped defs.yaml names it
        "every_materialization_automation_sensor",  # the default: the dbt project's name
    }


@pytest.mark.parametrize(
    "component, attributes",
    [
        (CUSTOM_DBT_COMPONENT, {"cli_args", "daily_cron", "cron_timezone", "cron_by_tag",
                                "cron_by_path", "speedups", "automation_sensor"}),
        (SAFE_SCHEDULED_JOB_COMPONENT, {"job_name", "cron_schedule", "asset_selection",
                                        "skip_reason_prefix", "execution_timezone",
                                        "default_status"}),
    ],
)  # fmt: skip
def test_each_attribute_of_our_components_is_described_in_their_yaml_schema(component, attributes):
    inspected = subprocess.run(
        ["dg", "utils", "inspect-component", component, "--defs-yaml-json-schema"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert inspected.returncode == 0, inspected.stderr[-3000:]
    schema = json.loads(inspected.stdout)
    attributes_schema = schema["properties"]["attributes"]
    definitions = {**schema.get("$defs", {}), **attributes_schema.get("$defs", {})}
    described = described_properties(definitions, attributes_schema)
    assert attributes <= set(described)
    assert {name for name in attributes if not described[name]} == set()
    if component == CUSTOM_DBT_COMPONENT:
        sensor_schema = next(
            option
            for option in attributes_schema["properties"]["automation_sensor"].get("anyOf", [])
            if "$ref" in option
        )
        sensor = described_properties(definitions, sensor_schema)
        assert set(sensor) == {"name", "minimum_interval_seconds", "default_status",
                               "split_by_folder", "max_assets_per_sensor"}  # fmt: skip
        assert all(sensor.values())


def described_properties(definitions: dict, node: dict) -> dict[str, str | None]:
    """Each property of a JSON-schema object (following a `$ref`) with its description."""
    if "$ref" in node:
        node = definitions[node["$ref"].rsplit("/", 1)[1]]
    return {name: prop.get("description") for name, prop in node["properties"].items()}
