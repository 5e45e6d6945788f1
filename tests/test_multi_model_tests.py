"""dbt tests that read more than one model (`relationships`, a singular test over two models):
each runs with its model as soon as every model it reads exists, and when it fails nothing
below the model it tests is built, in that run or later; while a model it reads has never been
built it is deferred, visibly, and runs once that model exists."""

import shutil
from datetime import datetime
from pathlib import Path

import dagster as dg
import pytest

from harness import (
    DAILY_TICK,
    SHIPPED_DBT_PROJECT,
    TABLES,
    Ticker,
    build_defs,
    checks_requested,
    land_orders_of_an_unknown_customer,
    launch,
    materialize,
    ready,
    reload_defs,
    the_sensors_run_requests,
    what_the_run_did,
)

pytestmark = [
    pytest.mark.both_storages,
    pytest.mark.usefixtures("dbt_from_a_preloaded_process"),  # tests/preloaded_dbt.py
]

RELATIONSHIPS = "relationships_stg_orders_customer_id__customer_id__ref_stg_customers_"
SINGULAR = "every_order_has_a_customer"
ORDERS_MARTS = {"customer_orders", "order_summary"}  # the marts that read stg_orders
HOURLY_MARTS = {"cron_by_path": {"marts": "0 * * * *"}}  # the marts hourly, the seeds daily
# A singular test on stg_orders (dagster-dbt's `meta.dagster.ref`) that reads stg_customers too.
SINGULAR_SQL = """\
{{ config(meta={"dagster": {"ref": {"name": "stg_orders"}}}) }}
select orders.order_id
from {{ ref('stg_orders') }} as orders
left join {{ ref('stg_customers') }} as customers on orders.customer_id = customers.customer_id
where customers.customer_id is null
"""


def land_orders(project: Path, unknown_customer: bool) -> None:
    if unknown_customer:
        land_orders_of_an_unknown_customer(project)
    else:
        shutil.copy(SHIPPED_DBT_PROJECT / "seeds" / "raw_orders.csv", project / "seeds")


def the_only_run(defs: dg.Definitions, instance: dg.DagsterInstance, ticker: Ticker) -> list[str]:
    """The ticker's last evaluation launched exactly one run: run it, and say what it did."""
    (request,) = the_sensors_run_requests(ticker)
    return launch(defs, instance, request)


def models_missing_for(ticker: Ticker, test: str) -> set[str]:
    """The models the check's latest evaluation names under "every model it reads exists", as
    its *Automation* tab shows them: each one missing, and not requested on that tick."""
    key = dg.AssetCheckKey(dg.AssetKey("stg_orders"), test)
    pending = [ticker.evaluated[key]]
    while pending:
        node = pending.pop()
        if node.condition.get_label() == "every model it reads exists":
            (any_missing,) = node.child_results
            return {dep.condition.name for dep in any_missing.child_results if dep.true_subset.size}
        pending.extend(node.child_results)
    raise AssertionError(f"no node 'every model it reads exists' in {test}'s evaluation")


def built(done: list[str]) -> set[str]:
    return {step.removeprefix("built ") for step in done if step.startswith("built ")}


def check(name: str) -> str:
    return f"stg_orders:{name}"


def test_an_unknown_customers_order_fails_the_views_own_relationships_test_and_holds_what_is_below(
    dbt_project, built_instance, after_daily_tick
):
    defs, ticker = ready(dbt_project, built_instance, after_daily_tick)
    ticker.defs = defs = reload_defs(dbt_project, **HOURLY_MARTS)
    land_orders(dbt_project, unknown_customer=True)
    materialize(defs, built_instance, ["raw_orders"])  # the seed's own tests pass

    assert ticker.tick() == {"stg_orders"}
    assert checks_requested(ticker) == {check(RELATIONSHIPS)}  # stg_customers exists
    done = the_only_run(defs, built_instance, ticker)
    assert f"{RELATIONSHIPS} failed" in done
    assert built(done) == {"stg_orders"}

    assert ticker.tick() == set()
    # 10:00, the marts are due: those over stg_orders wait; customer_segments reads only
    # customer_orders, which still holds the last good data.
    assert ticker.tick_at(after_daily_tick.replace(hour=10, minute=0, second=30)) == {
        "customer_segments"
    }
    assert ticker.tick() == set()


def test_the_daily_run_with_an_unknown_customers_order_builds_no_mart_over_stg_orders(
    dbt_project, built_instance, before_daily_tick
):
    """dbt's own rule would build order_summary, which reads stg_orders but not stg_customers."""
    defs, ticker = ready(dbt_project, built_instance, before_daily_tick)
    land_orders(dbt_project, unknown_customer=True)
    assert ticker.tick_at(before_daily_tick.replace(hour=6, minute=0, second=30)) == DAILY_TICK
    done = the_only_run(defs, built_instance, ticker)
    assert f"{RELATIONSHIPS} failed" in done
    assert built(done) == DAILY_TICK - TABLES


def test_after_the_fix_every_held_back_table_is_requested_once(
    dbt_project, built_instance, before_daily_tick
):
    defs, ticker = ready(dbt_project, built_instance, before_daily_tick)
    land_orders(dbt_project, unknown_customer=True)
    ticker.tick_at(before_daily_tick.replace(hour=6, minute=0, second=30))
    assert built(the_only_run(defs, built_instance, ticker)) == DAILY_TICK - TABLES
    assert [ticker.tick() for _ in range(2)] == [set(), set()]

    land_orders(dbt_project, unknown_customer=False)
    materialize(defs, built_instance, ["raw_orders"])
    # The fixed view is retested in the run that builds the tables it held back.
    assert ticker.tick() == {"stg_orders", *TABLES}
    done = the_only_run(defs, built_instance, ticker)
    assert f"{RELATIONSHIPS} passed" in done
    assert built(done) == {"stg_orders", *TABLES}
    assert [ticker.tick() for _ in range(3)] == [set(), set(), set()]


def test_a_singular_test_over_two_models_holds_back_what_is_below_its_model(
    dbt_project, built_instance, after_daily_tick
):
    (dbt_project / "tests").mkdir()
    (dbt_project / "tests" / f"{SINGULAR}.sql").write_text(SINGULAR_SQL)
    defs, ticker = ready(dbt_project, built_instance, after_daily_tick)
    ticker.defs = defs = reload_defs(dbt_project, **HOURLY_MARTS)
    # A new test on models that exist runs at once, alone.
    assert ticker.tick() == set()
    assert checks_requested(ticker) == {check(SINGULAR)}
    assert the_only_run(defs, built_instance, ticker) == [f"{SINGULAR} passed"]

    land_orders(dbt_project, unknown_customer=True)
    materialize(defs, built_instance, ["raw_orders"])
    assert ticker.tick() == {"stg_orders"}
    assert checks_requested(ticker) == {check(RELATIONSHIPS), check(SINGULAR)}
    assert f"{SINGULAR} failed" in the_only_run(defs, built_instance, ticker)
    assert ticker.tick_at(after_daily_tick.replace(hour=10, minute=0, second=30)) == {
        "customer_segments"
    }

    # In one run, too: dbt skips order_summary, which reads stg_orders only.
    result = materialize(
        defs, built_instance, ["stg_orders", "order_summary"], raise_on_error=False
    )
    done = what_the_run_did(result.all_events)
    assert f"{SINGULAR} failed" in done
    assert built(done) == {"stg_orders"}


def test_a_test_whose_other_model_was_never_built_is_deferred_visibly_and_runs_once_it_exists(
    dbt_project, instance, before_daily_tick: datetime
):
    defs = build_defs(dbt_project)
    ticker = Ticker(defs, instance, before_daily_tick)
    materialize(defs, instance, ["raw_orders"])  # raw_customers, so stg_customers, missing

    assert ticker.tick() == {"stg_orders"}
    assert checks_requested(ticker) == set()  # deferred: stg_customers was never built
    assert models_missing_for(ticker, RELATIONSHIPS) == {"stg_customers"}  # its evaluation says so
    (request,) = the_sensors_run_requests(ticker)
    assert dg.AssetCheckKey(dg.AssetKey("stg_orders"), RELATIONSHIPS) not in (
        request.asset_check_keys
    )
    assert launch(defs, instance, request)[0] == "built stg_orders"

    # Run by hand with every check, it says which test waits, and for what.
    result = materialize(defs, instance, ["stg_orders"])
    (warning,) = [
        record.user_message
        for record in instance.all_logs(result.run_id)
        if "deferred" in record.user_message
    ]
    assert f"dbt test {RELATIONSHIPS}" in warning
    assert "stg_customers, which has never been built" in warning
    assert not [step for step in what_the_run_did(result.all_events) if RELATIONSHIPS in step]

    materialize(defs, instance, ["raw_customers"])
    assert ticker.tick() == {"stg_customers"}
    assert checks_requested(ticker) == {check(RELATIONSHIPS)}
    done = the_only_run(defs, instance, ticker)
    assert done.index("built stg_customers") < done.index(f"{RELATIONSHIPS} passed")
    assert ticker.tick() == set()
    assert checks_requested(ticker) == set()
