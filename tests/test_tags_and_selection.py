"""`dagster/materialization` comes from dbt's config and selects assets by what they are."""

from pathlib import Path

import dagster as dg
import pytest

from harness import (
    SEEDS,
    TABLES,
    VIEWS,
    Ticker,
    build_defs,
    copy_dbt_project,
    materialize,
    names,
    parse,
)

FIXTURE = Path(__file__).parent / "fixtures" / "every_materialization"
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
        ("tag:dagster/materialization=view", VIEWS),
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


def test_daily_cron_and_timezone_are_attributes(every_materialization):
    defs = build_defs(every_materialization, daily_cron="30 2 * * *", cron_timezone="Europe/Berlin")
    assert tags_and_labels(defs)["a_seed"] == (
        "seed",
        "refresh on cron '30 2 * * *' (Europe/Berlin)",
    )
