"""A simulated week: what each automation builds, what that costs, and how fresh the marts are.

One generated project of the demo's shape: landing tables that an EL tool loads outside Dagster
(two every 5 minutes, two hourly, two daily at 02:00, two idle after the first day), a staging
view over each, intermediate views over two staging views, and mart tables over views. Three
automations run the same week on their own real (SQLite) instance, the sensor evaluated every
15 minutes with Dagster's own evaluation, its requests built at once in one recorded run:

- the seed's policies (views on change, tables daily at 06:00);
- `eager()` on every asset;
- the same policies with reuse (`reuse: true`, dbt State's defaults: a 45-minute lag tolerance,
  new data from any parent).

Reported per automation: the builds of views and of tables, the build time they sum to under a
cost model (`VIEW_SECONDS`, `TABLE_SECONDS` per build: a model, not a measurement), and how
old the marts' data was: at each tick, for each mart and each landing table upstream of it, the
age of the oldest load the mart does not reflect yet (0 when it reflects every load). A view
holds no data, so a mart reflects the loads up to its own build, through views, and a table's
up to that table's build.
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
from dagster._core.events import (
    AssetMaterializationPlannedData,
    DagsterEvent,
    DagsterEventType,
    StepMaterializationData,
)

from bench.measure import instance_in
from dbt_automation_demo.automation import refresh_daily, refresh_on_change
from dbt_automation_demo.reuse import MATERIALIZATION_TAG, ReuseSettings

START = datetime(2031, 3, 3, 0, 0, 30, tzinfo=UTC)  # a Monday, never on a minute
# The sensor's tick: every 15 minutes (Dagster's default interval is 30 s; a tick costs the same
# whatever its interval, and a week of 5-minute ticks takes most of an hour here).
TICK = timedelta(minutes=15)
LOAD_EVERY = timedelta(minutes=5)
VIEW_SECONDS, TABLE_SECONDS = 1.0, 30.0
LANDINGS = {  # landing table -> when a load lands (minute of the day, or idle after day 1)
    "every_5_min_a": "*/5", "every_5_min_b": "*/5",
    "hourly_a": "hourly", "hourly_b": "hourly",
    "daily_a": "daily", "daily_b": "daily",
    "idle_a": "idle", "idle_b": "idle",
}  # fmt: skip
INTERMEDIATE = {
    "int_fast": ["stg_every_5_min_a", "stg_hourly_a"],
    "int_slow": ["stg_daily_a", "stg_idle_a"],
    "int_mixed": ["stg_every_5_min_b", "stg_daily_b"],
}
MARTS = {
    "mart_activity": ["int_fast", "stg_hourly_b"],
    "mart_finance": ["stg_idle_a", "stg_idle_b"],  # nothing new after the first day
    "mart_mixed": ["int_mixed", "int_fast"],
    "mart_daily": ["stg_daily_a", "stg_daily_b"],
}
AUTOMATIONS = ("the seed's policies", "eager() on every asset", "reuse (dbt State's defaults)")


def parents() -> dict[str, list[str]]:
    staging = {f"stg_{name}": [name] for name in LANDINGS}
    return {**{name: [] for name in LANDINGS}, **staging, **INTERMEDIATE, **MARTS}


def is_view(name: str) -> bool:
    return name.startswith(("stg_", "int_"))


def definitions(automation: str) -> dg.Definitions:
    reuse = ReuseSettings() if automation.startswith("reuse") else None

    def condition(name: str) -> dg.AutomationCondition | None:
        if name in LANDINGS:
            return None  # loaded outside Dagster
        if automation.startswith("eager"):
            return dg.AutomationCondition.eager()
        return refresh_on_change(reuse=reuse) if is_view(name) else refresh_daily(reuse=reuse)

    specs = [
        dg.AssetSpec(
            name,
            deps=deps,
            automation_condition=condition(name),
            tags={MATERIALIZATION_TAG: "view" if is_view(name) else "table"},
        )
        for name, deps in parents().items()
    ]

    @dg.multi_asset(specs=specs, can_subset=True)
    def week_graph():  # never executed: the runs are recorded
        raise NotImplementedError

    return dg.Definitions(assets=[week_graph])


def loads_in_tick(name: str, now: datetime) -> list[datetime]:
    """When loads land in the landing table in the tick that ends at `now` (5-minute steps)."""
    times = [now - step * LOAD_EVERY for step in range(int(TICK / LOAD_EVERY))][::-1]
    cadence = LANDINGS[name]
    if cadence == "*/5":
        return times
    if cadence == "hourly":
        return [at for at in times if at.minute < 5]
    if cadence == "daily":
        return [at for at in times if (at.hour, at.minute // 5) == (2, 0)]
    return times[:1] if now - START < TICK else []  # idle after its first load


@dataclass
class Week:
    """One automation's week on its own instance."""

    automation: str
    instance: dg.DagsterInstance
    builds: dict[str, int] = field(default_factory=lambda: {"view": 0, "table": 0})
    # table or landing -> the time up to which it reflects each landing table's loads
    as_of: dict[str, dict[str, datetime]] = field(default_factory=dict)
    loads: dict[str, list[datetime]] = field(default_factory=dict)
    staleness: list[float] = field(default_factory=list)

    def run(self, names: list[str], now: datetime) -> None:
        run = self.instance.add_run(
            dg.DagsterRun(
                job_name="__ASSET_JOB",
                status=dg.DagsterRunStatus.STARTED,
                asset_selection=frozenset(dg.AssetKey(name) for name in names),
            )
        )
        for name in names:
            planned = AssetMaterializationPlannedData(dg.AssetKey(name))
            self._report(run, DagsterEventType.ASSET_MATERIALIZATION_PLANNED, planned, now)
        for name in names:
            data = StepMaterializationData(dg.AssetMaterialization(name))
            self._report(run, DagsterEventType.ASSET_MATERIALIZATION, data, now)
            if name not in LANDINGS:
                self.builds["view" if is_view(name) else "table"] += 1
                if not is_view(name):
                    self.as_of[name] = self._reflected(name, now)
        self._report(run, DagsterEventType.RUN_SUCCESS, None, now)

    def _report(self, run: dg.DagsterRun, kind: DagsterEventType, data, now: datetime) -> None:
        event = DagsterEvent(
            event_type_value=kind.value, job_name=run.job_name, event_specific_data=data
        )
        self.instance.report_dagster_event(event, run_id=run.run_id, timestamp=now.timestamp())

    def _reflected(self, name: str, now: datetime) -> dict[str, datetime]:
        """What `name` shows when built now: for each landing table upstream, the time up to
        which its loads are in (through views, which hold no data, up to now; through a table,
        up to that table's build)."""
        shown: dict[str, datetime] = {}
        for parent in parents()[name]:
            for landing, until in self._shows(parent, now).items():
                shown[landing] = min(until, shown.get(landing, until))
        return shown

    def _shows(self, name: str, now: datetime) -> dict[str, datetime]:
        if name in LANDINGS:
            return {name: now}
        if is_view(name):
            return self._reflected(name, now)
        return self.as_of.get(name, {})

    def sample_staleness(self, now: datetime) -> None:
        for mart in MARTS:
            for landing, until in self.as_of.get(mart, {}).items():
                unseen = [load for load in self.loads.get(landing, []) if load > until]
                self.staleness.append((now - min(unseen)).total_seconds() if unseen else 0.0)


def simulate(automation: str, days: float, scratch: Path) -> Week:
    defs = definitions(automation)
    everything = list(parents())
    with instance_in(scratch / automation.split()[0].strip("()'"), consolidated=True) as instance:
        week = Week(automation, instance)
        week.run(everything, START - timedelta(minutes=1))  # built once before the week
        cursor = None
        now = START
        while now < START + timedelta(days=days):
            # One EL sync per tick loads every landing table with new data.
            landed = {name: loads_in_tick(name, now) for name in LANDINGS}
            for name, loads in landed.items():
                week.loads.setdefault(name, []).extend(loads)
            if any(landed.values()):
                week.run([name for name, loads in landed.items() if loads], now)
            result = dg.evaluate_automation_conditions(
                defs=defs, instance=instance, evaluation_time=now, cursor=cursor
            )
            cursor = result.cursor
            requested = [n for n in everything if result.get_num_requested(dg.AssetKey(n))]
            if requested:
                week.run(requested, now)
            week.sample_staleness(now)
            now += TICK
        return week


def week_figures(days: float = 7) -> list[dict]:
    """Each automation's builds, modelled build time and the marts' staleness over `days`."""
    rows = []
    # In memory where the machine has a tmpfs: thousands of small writes.
    in_memory = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="bench-week-", dir=in_memory) as scratch:
        for automation in AUTOMATIONS:
            week = simulate(automation, days, Path(scratch))
            seconds = week.builds["view"] * VIEW_SECONDS + week.builds["table"] * TABLE_SECONDS
            rows.append(
                {
                    "automation": automation,
                    "days": days,
                    "view_builds": week.builds["view"],
                    "table_builds": week.builds["table"],
                    "build_seconds": seconds,
                    "staleness_mean_minutes": statistics.fmean(week.staleness) / 60,
                    "staleness_p95_minutes": _p95(week.staleness) / 60,
                }
            )
    return rows


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.95 * (len(ordered) - 1))]


def week_table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    header = (
        "| automation | view builds | table builds | build time (model) "
        "| marts' data age: mean, p95 |"
    )
    lines = [
        "",
        f"A simulated week ({rows[0]['days']:g} days, a tick every 15 minutes):",
        "",
        header,
    ]
    lines.append("|---|---|---|---|---|")
    for row in rows:
        lines.append(
            f"| {row['automation']} | {row['view_builds']:,} | {row['table_builds']:,} | "
            f"{row['build_seconds'] / 3600:.1f} h | {row['staleness_mean_minutes']:.0f} min, "
            f"{row['staleness_p95_minutes']:.0f} min |"
        )
    return lines


if __name__ == "__main__":
    import sys

    days = float(sys.argv[1]) if len(sys.argv) > 1 else 7
    print("\n".join(week_table(week_figures(days))))
