"""`nox -s demo`: the README's walkthroughs, replayed headlessly on a simulated clock.

Everything is real except the clock: a temporary Dagster instance and DuckDB file, the shipped
project (copied, so that its SQL and its defs.yaml can be edited), real dbt runs, and the
project's own policies, evaluated tick by tick the way the automation sensor does. Runs and
observations happen at the simulated time, for Dagster too (its events' stamps): reuse reads a
build's age from them.
"""

import contextlib
import io
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from dbt_automation_demo.components.source_observations import (
    FRESHNESS_CHECK,
    observation_job_name,
)
from dbt_automation_demo.internals.simulated_clock import SimulatedClock
from dbt_automation_demo.land import land_a_batch
from dbt_automation_demo.replay import (
    DBT_DEFS_YAML,
    Ticker,
    copy_dagster_project,
    defs_from_yaml,
    end_run,
    materialize,
    parse,
    reparse,
    start_run,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DAY = datetime(2031, 3, 4, tzinfo=UTC)
OBSERVE_JOB = observation_job_name("analytics_dbt")  # the dbt project's name


class Timeline:
    def __init__(self, ticker: Ticker, instance: dg.DagsterInstance):
        self.ticker = ticker
        self.instance = instance
        self.clock = SimulatedClock()

    def say(self, what: str) -> None:
        print(f"{self.ticker.now:%a %H:%M}  {what}", flush=True)

    def tick_at(self, hour: int, minute: int = 0, second: int = 0) -> set[str]:
        requested = self.ticker.tick_at(DAY.replace(hour=hour, minute=minute, second=second))
        self.say(f"tick   requested: {_listed(requested)}")
        return requested

    def run(self, asset_names: Iterable[str]) -> None:
        """Materialize for real (if anything was requested), keeping dbt's and Dagster's logs
        unless the run fails for another reason than a failed test."""
        asset_names = sorted(asset_names)
        if not asset_names:
            return
        logs = io.StringIO()
        with (
            contextlib.redirect_stdout(logs),
            contextlib.redirect_stderr(logs),
            self.clock.at(self.ticker.now),
        ):
            result = materialize(self.ticker.defs, self.instance, asset_names, raise_on_error=False)
        failed_tests = sorted(
            f"{_possessive(check.asset_key.to_user_string())} test {check.check_name}"
            for check in result.get_asset_check_evaluations()
            if not check.passed
        )
        built = {
            event.asset_key.to_user_string() for event in result.get_asset_materialization_events()
        }
        if result.success:
            outcome = "succeeded"
        elif failed_tests:
            skipped = set(asset_names) - built
            outcome = f"FAILED: {', '.join(failed_tests)} failed" + (
                f"; dbt skipped {_listed(skipped)}" if skipped else ""
            )
        else:
            print(logs.getvalue())
            outcome = "FAILED"
        self.say(f"run    dbt build {_listed(asset_names)}: {outcome}")

    def observe_at(self, hour: int, minute: int) -> None:
        """The source observation job's run (its schedule's): what it saw in each source, and
        dbt's freshness verdict (on the real clock: dbt compares `loaded_at` with now)."""
        self.ticker.now = DAY.replace(hour=hour, minute=minute)
        job = self.ticker.defs.resolve_job_def(OBSERVE_JOB)
        with (
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
            self.clock.at(self.ticker.now),
        ):
            result = job.execute_in_process(instance=self.instance)
        # An observation is recorded only for a new data version; each source's checks, always.
        observed = {event.asset_key for event in result.get_asset_observation_events()}
        for check in result.get_asset_check_evaluations():
            if check.check_name == FRESHNESS_CHECK:
                seen = "new data" if check.asset_key in observed else "no new data"
                freshness = check.metadata["dbt freshness status"].value
                self.say(f"observe {check.asset_key.to_user_string()}: {seen}; "
                         f"dbt freshness: {freshness}")  # fmt: skip

    def why_waiting(self, asset: str) -> None:
        """The parent the asset's latest evaluation names as holding it back, as the UI shows
        it (a tick that carried the evaluation forward stored none)."""
        pending, reasons = [self.ticker.evaluated[dg.AssetKey(asset)]], []
        while pending:
            node = pending.pop()
            if type(node.condition).__name__ == "HeldBackBy":
                reasons.append(node.condition.name)
            pending.extend(node.child_results)
        self.say(f"why    {asset} waits: {'; '.join(reasons) or 'nothing holds it back'}")


def _possessive(name: str) -> str:
    return f"{name}'" if name.endswith("s") else f"{name}'s"


def _listed(asset_names: Iterable[str]) -> str:
    return ", ".join(sorted(asset_names)) or "nothing"


def replay(workdir: Path) -> None:
    copy_dagster_project(PROJECT_ROOT, workdir)
    project = workdir / "analytics_dbt"
    os.environ["DBT_DUCKDB_PATH"] = str(workdir / "warehouse" / "analytics.duckdb")
    os.environ["DBT_LANDING_ZONE"] = str(project / "landing")
    (workdir / "warehouse").mkdir()
    parse(project)
    home = workdir / "dagster_home"
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        timeline = Timeline(Ticker(defs_from_yaml(workdir), instance, DAY), instance)
        print("== Walkthrough 1: a fresh instance; nothing runs before the daily tick")
        timeline.tick_at(5)
        timeline.run(timeline.tick_at(6))
        timeline.tick_at(6, 1)

        print("\n== Walkthrough 2: a seed is materialized; the view downstream follows, once")
        timeline.say("you    materialize raw_customers")
        timeline.run(["raw_customers"])
        timeline.run(timeline.tick_at(10, 1))
        timeline.tick_at(10, 2)

        print("\n== Walkthrough 3: a view's SQL changes; that view alone is requested, once")
        timeline.say(
            "you    edit stg_customers.sql (lower(trim(email))) and reload the definitions"
        )
        sql = project / "models" / "staging" / "stg_customers.sql"
        sql.write_text(sql.read_text().replace("lower(email)", "lower(trim(email))"))
        reparse(project)
        timeline.ticker.defs = defs_from_yaml(workdir)
        timeline.run(timeline.tick_at(11, 1))
        timeline.tick_at(11, 2)

        print("\n== Walkthrough 4: daily_cron every 2 minutes; a running table is not requested")
        set_daily_cron(workdir, "*/2 * * * *")
        timeline.ticker.defs = defs_from_yaml(workdir)
        timeline.say("you    set daily_cron: '*/2 * * * *' in defs.yaml and reload")
        timeline.run(timeline.tick_at(11, 4))
        timeline.tick_at(11, 5)
        timeline.say("you    start a run of order_summary that is still going at 11:07")
        running = start_run(timeline.ticker.defs, instance, ["order_summary"])
        timeline.run(timeline.tick_at(11, 6))
        timeline.tick_at(11, 7)
        end_run(instance, running)
        timeline.say("       that run of order_summary ends")
        timeline.tick_at(11, 8)

        print("\n== Walkthrough 5: a failed test holds the marts back; they run once it is fixed")
        set_daily_cron(workdir, "0 6 * * *", marts="*/2 * * * *")
        timeline.say("you    set the daily cron back, the marts every two minutes, and reload")
        timeline.ticker.defs = defs_from_yaml(workdir)
        timeline.tick_at(11, 9)
        land_orders(project, project / "demo_data" / "raw_orders_bad.csv")
        timeline.ticker.defs = defs_from_yaml(workdir)
        timeline.say(
            "you    land raw_orders_bad.csv (an order 'lost'), reload, materialize raw_orders"
        )
        timeline.run(["raw_orders"])
        timeline.run(timeline.tick_at(11, 9, 30))
        timeline.run(timeline.tick_at(11, 10, 30))
        timeline.why_waiting("customer_orders")
        timeline.tick_at(11, 11)
        land_orders(project, PROJECT_ROOT / "analytics_dbt" / "seeds" / "raw_orders.csv")
        timeline.ticker.defs = defs_from_yaml(workdir)
        timeline.say("you    land the good raw_orders.csv, reload, materialize raw_orders")
        timeline.run(["raw_orders"])
        timeline.run(timeline.tick_at(11, 13))
        timeline.tick_at(11, 13, 30)

        print("\n== Walkthrough 6: a batch lands in a dbt source; the view over it follows, once")
        set_daily_cron(workdir, "0 6 * * *")
        timeline.ticker.defs = defs_from_yaml(workdir)
        timeline.say("you    set the marts' cron back to daily and reload")
        timeline.tick_at(11, 14)
        timeline.why_waiting("stg_payments")
        timeline.observe_at(11, 15)  # its schedule's: the landing zone's first batch
        timeline.run(timeline.tick_at(11, 15, 30))
        timeline.ticker.now = DAY.replace(hour=11, minute=17)
        land_a_batch(project / "landing", timeline.ticker.now)
        timeline.say("you    nox -s land: a batch of payments lands")
        timeline.observe_at(11, 20)
        timeline.run(timeline.tick_at(11, 20, 30))
        timeline.observe_at(11, 25)
        timeline.tick_at(11, 25, 30)

        print("\n== Walkthrough 7: a lag tolerance of 10 minutes: once per window, not per landing")
        give_lag_tolerance(project, "stg_payments", minutes=10)
        timeline.ticker.defs = defs_from_yaml(workdir)
        timeline.say("you    give stg_payments `+state: {lag_tolerance: 10m}` and reload")
        for minute in (27, 30, 33, 36, 39):  # every three minutes
            timeline.ticker.now = DAY.replace(hour=11, minute=minute)
            land_a_batch(project / "landing", timeline.ticker.now)
            timeline.say("you    nox -s land: a batch of payments lands")
            timeline.observe_at(11, minute + 1)
            requested = timeline.tick_at(11, minute + 1, 30)
            if requested:
                timeline.run(requested)
            else:
                timeline.why_waiting("stg_payments")
        timeline.run(timeline.tick_at(11, 42, 30))  # no landing: the last one is built
        timeline.tick_at(11, 45, 30)


def set_daily_cron(project_root: Path, cron: str, marts: str | None = None) -> None:
    """Edit `daily_cron` in the project's defs.yaml (and `cron_by_path` for the marts), as
    the README's walkthroughs say."""
    defs_yaml = project_root / DBT_DEFS_YAML
    line = f'  daily_cron: "{cron}"' + (f'\n  cron_by_path: {{marts: "{marts}"}}' if marts else "")
    without_marts = re.sub(r"(?m)^  cron_by_path: .*\n", "", defs_yaml.read_text())
    edited = re.sub(r"(?m)^  daily_cron: .*$", line, without_marts, count=1)
    defs_yaml.write_text(edited)


def give_lag_tolerance(project: Path, model: str, minutes: int) -> None:
    """dbt State's `+state: {lag_tolerance: ...}` for one model of the staging folder in
    dbt_project.yml, parsed again, as a reload does."""
    config = project / "dbt_project.yml"
    staging = "    staging:\n      +materialized: view\n"
    if staging not in config.read_text():
        raise ValueError(f"{config}: no `staging: +materialized: view` to add `+state` under")
    state = (
        f"      {model}:\n        +state: {{lag_tolerance: {{count: {minutes}, period: minute}}}}\n"
    )
    config.write_text(config.read_text().replace(staging, staging + state))
    reparse(project)


def land_orders(project: Path, orders: Path) -> None:
    """New orders land in the seed, and the project is parsed again, as a reload does."""
    shutil.copy(orders, project / "seeds" / "raw_orders.csv")
    reparse(project)


def main() -> None:
    # dagster-dbt builds every asset's code reference from beta and preview classes, and says so
    # for every asset of every build: dozens of warnings between the timeline's lines.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    with tempfile.TemporaryDirectory(prefix="dbt-automation-demo-") as workdir:
        replay(Path(workdir))


if __name__ == "__main__":
    main()
