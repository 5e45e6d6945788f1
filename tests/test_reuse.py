"""Reuse, configured as dbt State is: a due node is built only when its code changed or what it
reads has new data, once its last build is `lag_tolerance` old (docs/reuse.md).

Builds here are recorded at their simulated times (the tolerance reads them); the shared built
instance's first build is older than any simulated time, so every tolerance has passed for it.
"""

from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml
from dagster._core.definitions.freshness import FreshnessState
from dagster._core.test_utils import freeze_time

from dbt_automation_demo.components.dbt_state import StateConfigError, reuse_settings
from dbt_automation_demo.reuse import NO_NEW_DATA, ReuseSettings
from harness import (
    SHIPPED_DBT_PROJECT,
    Ticker,
    edit_logic,
    freshness,
    land,
    materialize,
    node_names,
    observe,
    ready,
    reload_defs,
    run_paused_in_its_step,
)

pytestmark = [
    pytest.mark.both_storages,
    pytest.mark.usefixtures("dbt_from_a_preloaded_process"),  # tests/preloaded_dbt.py
]

ORDERS_AND_BELOW = {"stg_orders", "customer_orders", "order_summary", "customer_segments"}
EVERY_15_MINUTES = {"cron_by_path": {"marts": "*/15 * * * *"}}


def configure_state(project: Path, node_path: str, state: dict) -> None:
    """`+state:` for one model in dbt_project.yml (`staging/stg_orders`), where dbt State reads
    it; a config is not logic, so the model's code version stays the same."""
    config_file = project / "dbt_project.yml"
    config = yaml.safe_load(config_file.read_text())
    level = config["models"]["analytics_dbt"]
    for part in node_path.split("/"):
        level = level.setdefault(part, {})
    level["+state"] = state
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))


def reusing(ticker: Ticker, project: Path, **attributes) -> None:
    """The ticker's definitions reloaded with these settings; their first evaluation (a new
    condition tree has nothing to compare with) requests nothing."""
    ticker.defs = reload_defs(project, **attributes)
    assert ticker.tick() == set()


def at(ticker: Ticker, hour: int, minute: int) -> datetime:
    return ticker.now.replace(hour=hour, minute=minute)


def build_at(ticker: Ticker, when: datetime, *assets: str) -> None:
    with freeze_time(when):
        materialize(ticker.defs, ticker.instance, assets)


def new_orders_land(project: Path) -> None:
    """New orders in the seed: its file, which is its code version, changes."""
    seed = project / "seeds" / "raw_orders.csv"
    lines = (SHIPPED_DBT_PROJECT / "seeds" / "raw_orders.csv").read_text().splitlines()
    seed.write_text("\n".join([*lines, lines[-1].replace(lines[-1].split(",")[0], "999999", 1)]))


def test_a_due_table_with_no_new_data_and_unchanged_code_is_not_built_and_not_overdue(
    dbt_project, built_instance, before_daily_tick
):
    _, ticker = ready(dbt_project, built_instance, before_daily_tick)
    reusing(ticker, dbt_project, reuse=True)
    # 06:01: every seed and table is due, and nothing changed since the last build.
    assert ticker.tick_at(at(ticker, 6, 1)) == set()
    assert f"customer_orders: {NO_NEW_DATA}" in node_names(ticker, "customer_orders")
    for table in ("customer_orders", "raw_orders"):
        assert freshness(ticker.defs, built_instance, table, at(ticker, 8, 0)) == (
            FreshnessState.NOT_APPLICABLE  # never overdue for having been reused
        )

    # 07:00: new orders land in the seed; one run builds it and what reads it, nothing else.
    new_orders_land(dbt_project)
    ticker.defs = reload_defs(dbt_project, reuse=True)
    assert ticker.tick_at(at(ticker, 7, 0)) == {"raw_orders"} | ORDERS_AND_BELOW
    build_at(ticker, at(ticker, 7, 1), "raw_orders", *ORDERS_AND_BELOW)
    assert [ticker.tick() for _ in range(2)] == [set(), set()]
    assert ticker.tick_at(at(ticker, 6, 1) + timedelta(days=1)) == set()  # the next day


def test_require_fresh_data_from_all_waits_for_new_data_in_every_parent(
    dbt_project, built_instance, after_daily_tick
):
    _, ticker = ready(dbt_project, built_instance, after_daily_tick)
    configure_state(dbt_project, "marts/customer_orders", {"require_fresh_data_from": "all"})
    reusing(ticker, dbt_project, reuse=True, **EVERY_15_MINUTES)

    build_at(ticker, at(ticker, 10, 0), "raw_customers")
    assert ticker.tick_at(at(ticker, 10, 1)) == {"stg_customers"}  # a new customer, no order
    build_at(ticker, at(ticker, 10, 2), "stg_customers")
    assert [ticker.tick_at(at(ticker, 10, minute)) for minute in (3, 16)] == [set(), set()]
    assert (
        f"customer_orders: {NO_NEW_DATA} from stg_orders (require_fresh_data_from: all)"
        in node_names(ticker, "customer_orders")
    )

    build_at(ticker, at(ticker, 10, 20), "raw_orders")
    assert ticker.tick_at(at(ticker, 10, 21)) == ORDERS_AND_BELOW


def test_a_view_with_a_lag_tolerance_builds_once_per_window_and_never_misses_the_last_landing(
    dbt_project, built_instance, after_daily_tick
):
    _, ticker = ready(dbt_project, built_instance, after_daily_tick)
    configure_state(
        dbt_project, "staging/stg_payments", {"lag_tolerance": {"count": 10, "period": "minute"}}
    )
    reusing(ticker, dbt_project)

    def lands(batch: int, minute: int) -> set[str]:
        """A batch lands, is observed, and the sensor ticks a minute later."""
        land(dbt_project, "payments", batch, loaded_at=at(ticker, 9, minute))
        with freeze_time(at(ticker, 9, minute)):
            observe(ticker.defs, built_instance)
        return ticker.tick_at(at(ticker, 9, minute + 1))

    assert lands(1, 4) == {"stg_payments"}  # the first observation: new data
    build_at(ticker, at(ticker, 9, 5), "stg_payments")
    assert [lands(2, 8), lands(3, 11)] == [set(), set()]  # 3 and 6 minutes after the build
    assert lands(4, 14) == {"stg_payments"}  # 10 minutes after it
    build_at(ticker, at(ticker, 9, 15), "stg_payments")
    assert lands(5, 17) == set()
    assert ticker.tick_at(at(ticker, 9, 24)) == set()
    assert ticker.tick_at(at(ticker, 9, 25)) == {"stg_payments"}  # the last landing is not lost
    build_at(ticker, at(ticker, 9, 25), "stg_payments")
    assert [ticker.tick_at(at(ticker, 9, minute)) for minute in (26, 40)] == [set(), set()]


def test_a_code_change_overrides_the_lag_tolerance(dbt_project, built_instance, after_daily_tick):
    _, ticker = ready(dbt_project, built_instance, after_daily_tick)
    configure_state(
        dbt_project, "staging/stg_orders", {"lag_tolerance": {"count": 4, "period": "hour"}}
    )
    reusing(ticker, dbt_project)
    build_at(ticker, at(ticker, 9, 5), "stg_orders")
    build_at(ticker, at(ticker, 9, 10), "raw_orders")
    assert ticker.tick_at(at(ticker, 9, 11)) == set()  # new data, within the tolerance

    edit_logic(dbt_project, "stg_orders")
    ticker.defs = reload_defs(dbt_project)
    assert ticker.tick() == {"stg_orders"}  # 09:12
    build_at(ticker, at(ticker, 9, 13), "stg_orders")
    assert [ticker.tick() for _ in range(2)] == [set(), set()]


def test_a_table_reads_new_data_through_a_view_that_was_not_rebuilt(
    dbt_project, built_instance, after_daily_tick
):
    _, ticker = ready(dbt_project, built_instance, after_daily_tick)
    configure_state(
        dbt_project, "staging/stg_orders", {"lag_tolerance": {"count": 4, "period": "hour"}}
    )
    reusing(ticker, dbt_project, reuse=True, **EVERY_15_MINUTES)
    build_at(ticker, at(ticker, 9, 5), *ORDERS_AND_BELOW)
    build_at(ticker, at(ticker, 10, 0), "raw_orders")
    # 10:16: the view keeps its build (within 4 hours); a view holds no data, so the marts that
    # read it read the new orders: they have new data.
    assert ticker.tick_at(at(ticker, 10, 16)) == ORDERS_AND_BELOW - {"stg_orders"}


def test_new_data_that_lands_during_a_reusing_views_own_run_builds_it_again(
    dbt_project, built_instance, after_daily_tick
):
    _, ticker = ready(dbt_project, built_instance, after_daily_tick)
    no_tolerance = {"lag_tolerance": {"count": 0, "period": "minute"}}
    configure_state(dbt_project, "staging/stg_customers", no_tolerance)
    reusing(ticker, dbt_project)
    materialize(ticker.defs, built_instance, ["raw_customers"])
    assert ticker.tick() == {"stg_customers"}
    with run_paused_in_its_step(ticker.defs, built_instance, ["stg_customers"]):
        materialize(ticker.defs, built_instance, ["raw_customers"])  # before dbt reads it
    # The view's build is the latest event, yet the data came after its run planned it.
    assert ticker.tick() == {"stg_customers"}
    assert ticker.tick() == set()


@pytest.mark.parametrize(
    ("state", "named"),
    [
        ({"lag_tolerance": "4h"}, "`state.lag_tolerance` = '4h': must be {count: <int>"),
        ({"lag_tolerance": {"count": 4, "period": "week"}}, "`state.lag_tolerance.period`"),
        ({"require_fresh_data_from": "most"}, "`state.require_fresh_data_from` = 'most'"),
        ({"lag_tolrance": {"count": 4}}, "`state.lag_tolrance` = {'count': 4}: not a key"),
    ],
)
def test_a_bad_state_config_is_named_at_load_time(dbt_project, state, named):
    configure_state(dbt_project, "staging/stg_orders", state)
    with pytest.raises(StateConfigError) as raised:
        reload_defs(dbt_project)
    assert "dbt model 'stg_orders' (models/staging/stg_orders.sql" in str(raised.value)
    assert named in str(raised.value)


def test_dbt_states_keys_and_defaults_read_as_dbt_state_reads_them():
    def node(state=None):
        return {"name": "m", "config": {} if state is None else {"state": state}}

    assert reuse_settings(node(), reuse_everything=False) is None
    assert reuse_settings(node(), reuse_everything=True) == ReuseSettings(
        lag_tolerance=timedelta(minutes=45), require_fresh_data_from="any"
    )
    assert reuse_settings(
        node({"lag_tolerance": {"count": 2, "period": "day", "updates_on": "all"}}), False
    ) == ReuseSettings(lag_tolerance=timedelta(days=2), require_fresh_data_from="all")
    assert reuse_settings(node({"pre_clone": "never"}), False) == ReuseSettings()
