"""A model's code version follows what dbt compiles: its SQL, the macros it calls and the
ephemeral models it inlines, without their comments and layout. So an edit of logic anywhere
in that requests the views it changes, once, and an edit that changes no logic requests
nothing; checked against dbt's own `state:modified`."""

import json
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from dbt_automation_demo.components.code_versions import CompiledSqlCodeVersions
from harness import DAILY_TICK, EVERY_VIEW, materialize, parse, ready, reload_defs

STG_ORDERS_MACRO = "macros/cents_to_dollars.sql"
DAY = timedelta(days=1)
# An ephemeral model that stg_customers inlines, and a macro that calls the shipped macro.
BASE_CUSTOMERS_SQL = (
    "{{ config(materialized='ephemeral') }}\nselect * from {{ ref('raw_customers') }}\n"
)
NESTED_MACRO_SQL = (
    "{% macro order_amount(column_name) -%}\n"
    "    {{ cents_to_dollars(column_name) }}\n"
    "{%- endmacro %}\n"
)
DESCRIPTION = "description: Orders with amounts in currency units. A view over the raw_orders seed."
VIEW_THROUGH_THE_NESTED_MACRO = (
    "select id as order_id, {{ order_amount('amount_cents') }} as amount\n"
    "from {{ ref('raw_orders') }}\n"
)
TABLE_USING_THE_MACRO = (
    "select count(*) as orders, sum({{ order_amount('amount_cents') }}) as revenue\n"
    "from {{ ref('raw_orders') }}\n"
)

pytestmark = pytest.mark.usefixtures("dbt_from_a_preloaded_process")  # tests/preloaded_dbt.py


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def replace(path: Path, old: str, new: str) -> None:
    content = path.read_text()
    assert old in content, f"{path} has no {old!r}"
    path.write_text(content.replace(old, new))


def with_ephemeral_and_nested_macro(project: Path) -> Path:
    """The shipped project, with stg_customers over an ephemeral model and a table
    `order_totals` that calls a macro which calls the shipped macro."""
    (project / "models" / "staging" / "base_customers.sql").write_text(BASE_CUSTOMERS_SQL)
    replace(
        project / "models/staging/stg_customers.sql",
        "ref('raw_customers')",
        "ref('base_customers')",
    )
    add_nested_macro(project)
    (project / "models" / "marts" / "order_totals.sql").write_text(TABLE_USING_THE_MACRO)
    return project


def add_nested_macro(project: Path) -> None:
    """The macro `order_amount`, which calls the shipped `cents_to_dollars`."""
    (project / "macros" / "order_amount.sql").write_text(NESTED_MACRO_SQL)


# Each edit: what it does to the project, and the models whose compiled SQL it changes (their
# code versions change; dbt's `state:modified` selects the same, except where DBT_DIFFERS).
EDITS = {
    "a_macro_a_view_calls": (
        lambda p: replace(p / STG_ORDERS_MACRO, "/ 100.0", "/ 100.00"),
        {"stg_orders", "stg_payments", "order_totals"},  # order_totals through order_amount
    ),
    "a_macro_that_calls_a_macro": (
        lambda p: replace(p / "macros/order_amount.sql", "{{ cents", "{{- cents"),
        {"order_totals"},
    ),
    "an_ephemeral_model": (
        lambda p: append(p / "models/staging/base_customers.sql", "where id is not null\n"),
        {"base_customers", "stg_customers"},
    ),
    "a_views_own_sql": (
        lambda p: replace(
            p / "models/staging/stg_orders.sql", "status,", "upper(status) as status,"
        ),
        {"stg_orders"},
    ),
    "a_string_literal": (
        lambda p: replace(p / "models/staging/stg_customers.sql", "' ' ||", "'  ' ||"),
        {"stg_customers"},
    ),
    "comments_and_layout_only": (
        lambda p: (
            replace(
                p / "models/staging/stg_orders.sql", "    status,", "    status,  -- as loaded"
            ),
            replace(p / "models/staging/stg_customers.sql", "select\n", "{# people #}\nselect\n\n"),
            replace(p / STG_ORDERS_MACRO, "/ 100.0", "/  100.0 /* cents */"),
        ),
        set(),
    ),
    "a_description": (
        lambda p: replace(p / "models/staging/schema.yml", DESCRIPTION, DESCRIPTION + " Edited."),
        set(),
    ),
    "a_test_only": (
        lambda p: replace(
            p / "models/staging/schema.yml",
            "description: Lower-cased e-mail address.",
            "description: Lower-cased e-mail address.\n        data_tests: [unique]",
        ),
        set(),
    ),
}


# dbt selects an edited ephemeral model, not the models that inline it (`state:modified+` would
# add every descendant); their compiled SQL changed, so their code versions do. dbt selects a
# model whose comments or layout changed, or that calls a macro whose did; dbt State and these
# code versions do not (README: what counts as an edit).
DBT_DIFFERS = {
    "an_ephemeral_model": {"base_customers"},
    "comments_and_layout_only": {"stg_orders", "stg_customers", "stg_payments", "order_totals"},
}


def model_code_versions(project: Path) -> dict[str, str | None]:
    manifest = json.loads((project / "target" / "manifest.json").read_text())
    versions = CompiledSqlCodeVersions(manifest)
    return {
        node["name"]: versions.of(node)
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model"
    }


def state_modified_models(project: Path, state: Path) -> set[str]:
    listed = subprocess.run(
        ["dbt", "ls", "--select", "state:modified", "--state", str(state),
         "--resource-type", "model", "--output", "name", "--quiet",
         "--project-dir", str(project), "--profiles-dir", str(project)],
        cwd=project, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return set(listed.stdout.split())


@pytest.mark.parametrize("edit", EDITS)
def test_code_versions_change_exactly_where_dbt_state_modified_says(dbt_project, tmp_path, edit):
    project = with_ephemeral_and_nested_macro(dbt_project)
    parse(project)
    before = model_code_versions(project)
    state = tmp_path / "state"
    shutil.copytree(project / "target", state)

    apply, changed = EDITS[edit]
    apply(project)
    parse(project)
    after = model_code_versions(project)

    assert {model for model in after if after[model] != before.get(model)} == changed
    assert state_modified_models(project, state) == DBT_DIFFERS.get(edit, changed)


def test_a_config_edit_is_modified_for_dbt_but_not_a_new_code_version(dbt_project, tmp_path):
    """A config is not SQL: a view made a table is modified for dbt; for Dagster its policy
    changes instead (docs/conditions.md lists the differences)."""
    before = model_code_versions(dbt_project)
    state = tmp_path / "state"
    shutil.copytree(dbt_project / "target", state)
    replace(dbt_project / "dbt_project.yml", "+materialized: view", "+materialized: table")
    parse(dbt_project)
    assert model_code_versions(dbt_project) == before
    assert state_modified_models(dbt_project, state) == EVERY_VIEW


@pytest.mark.both_storages
def test_macro_edit_requests_the_views_that_call_it_once_and_no_other(
    dbt_project, built_instance, after_daily_tick
):
    """stg_orders calls cents_to_dollars; a new view stg_order_amounts calls order_amount,
    which calls cents_to_dollars: the two views share it, one directly, one through a macro."""
    _, ticker = ready(dbt_project, built_instance, after_daily_tick)
    add_nested_macro(dbt_project)
    (dbt_project / "models" / "staging" / "stg_order_amounts.sql").write_text(
        VIEW_THROUGH_THE_NESTED_MACRO
    )
    ticker.defs = reload_defs(dbt_project)
    assert ticker.tick() == {"stg_order_amounts"}  # a new view
    materialize(ticker.defs, built_instance, ["stg_order_amounts"])
    assert ticker.tick() == set()

    EDITS["a_macro_a_view_calls"][0](dbt_project)  # cents_to_dollars: shared, nested
    ticker.defs = reload_defs(dbt_project)
    assert ticker.tick() == {"stg_orders", "stg_order_amounts"}
    assert ticker.tick() == set()


@pytest.mark.both_storages
def test_ephemeral_model_edit_requests_the_views_that_inline_it(
    dbt_project, built_instance, after_daily_tick
):
    _, ticker = ready(dbt_project, built_instance, after_daily_tick)
    with_ephemeral_and_nested_macro(dbt_project)
    ticker.defs = reload_defs(dbt_project)
    assert ticker.tick() == {"stg_customers"}  # its SQL changed: it now inlines base_customers
    materialize(ticker.defs, built_instance, ["stg_customers"])
    assert ticker.tick() == set()

    EDITS["an_ephemeral_model"][0](dbt_project)
    ticker.defs = reload_defs(dbt_project)
    assert ticker.tick() == {"stg_customers"}
    assert ticker.tick() == set()


@pytest.mark.both_storages
def test_a_comment_only_edit_requests_nothing(dbt_project, built_instance, after_daily_tick):
    """Comments and layout in views, in a macro they call: no view is requested; then a real
    edit of the same view is."""
    _, ticker = ready(dbt_project, built_instance, after_daily_tick)
    EDITS["comments_and_layout_only"][0](dbt_project)
    ticker.defs = reload_defs(dbt_project)
    assert ticker.tick() == set()
    EDITS["a_views_own_sql"][0](dbt_project)
    ticker.defs = reload_defs(dbt_project)
    assert ticker.tick() == {"stg_orders"}


@pytest.mark.both_storages
def test_description_or_test_only_edit_requests_nothing(
    dbt_project, built_instance, after_daily_tick
):
    _, ticker = ready(dbt_project, built_instance, after_daily_tick)
    for edit in ("a_description", "a_test_only"):
        EDITS[edit][0](dbt_project)
        ticker.defs = reload_defs(dbt_project)
        assert ticker.tick() == set(), edit


@pytest.mark.both_storages
def test_a_tables_code_version_follows_its_macros_too(
    dbt_project, built_instance, after_daily_tick
):
    _, ticker = ready(dbt_project, built_instance, after_daily_tick)
    add_nested_macro(dbt_project)
    (dbt_project / "models" / "marts" / "order_totals.sql").write_text(TABLE_USING_THE_MACRO)
    ticker.defs = reload_defs(dbt_project)
    before = ticker.defs.resolve_asset_graph()
    assert ticker.tick() == set()  # a new table waits for its cron too

    EDITS["a_macro_a_view_calls"][0](dbt_project)  # order_totals calls it through order_amount
    ticker.defs = reload_defs(dbt_project)
    after = ticker.defs.resolve_asset_graph()
    changed = {
        key.to_user_string()
        for key in after.materializable_asset_keys
        if after.get(key).code_version != before.get(key).code_version
    }
    assert changed == {"stg_orders", "stg_payments", "order_totals"}  # as the UI shows
    # The view over a seed; the table waits for its cron, the view over the landing zone for
    # its source's first observation.
    assert ticker.tick() == {"stg_orders"}
    assert [ticker.tick(timedelta(hours=4)) for _ in range(5)] == [set()] * 5  # to 05:03
    assert ticker.tick_at(after_daily_tick.replace(hour=6, minute=0, second=30) + DAY) == (
        DAILY_TICK | {"order_totals"}
    )
