"""`nox -s bench [-- --quick | --smoke] [--json PATH]`: the measurements, a table, optionally JSON.

Exits non-zero when a measurement fails or a figure is missing; a missed target is reported,
not failed (the figures are for reading, on whatever machine this runs).
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from importlib.metadata import version
from pathlib import Path

import dagster as dg

from bench.daemon import DAEMON_SETTINGS, daemon_cadence
from bench.measure import (
    SENSOR_INTERVAL_SECONDS,
    SENSOR_LAYOUTS,
    Comparison,
    automation_ticks,
    definitions_build,
    dev_loop,
    orchestration,
    splitting,
)
from bench.sources import SOURCE_MEASURES, source_figures
from bench.synthetic import generate_project
from bench.week import AUTOMATIONS, week_figures, week_table
from dbt_automation_demo.replay import parse

FULL_SIZES = (100, 1000, 5000)
QUICK_SIZES = (100, 1000)
SOURCE_SIZES = (100, 1000)  # numbers of sources, each with its view
PER_SIZE_MEASURES = (
    "definitions build",
    "automation tick",
    "automation tick, nothing changed",
    "automation tick, every node on every tick",
    "automation tick, nothing changed, every node on every tick",
    "dev loop after an SQL edit",
)
TARGETS = {
    "definitions build": 1.05,
    "automation tick": 0.3,
    "automation tick, nothing changed": 0.1,
    "automation tick after observing every source": 0.5,
    "automation tick, no observation since": 0.5,
    "dev loop after an SQL edit": 1.5,  # 2.0 at 5,000 models (#34)
    "materialize the demo (8 assets, 28 tests)": 1.25,
}
SPLITTING_SIZES = (1000, 5000)
# A real daemon runs the sensors for this long, at the largest size of 1,000 models or more.
DAEMON_SECONDS, DAEMON_SECONDS_QUICK = 150, 90
# `--smoke` (CI): every kind of figure computed once, as cheaply as it can be: 100 models, the
# sensor layouts and the daemon at that size too, the daemon's sensors every 5 s for 30 s.
SMOKE = {"sizes": (100,), "splitting_sizes": (100,), "daemon_size": 100,
         "daemon_seconds": 30, "daemon_interval": 5, "source_sizes": (100,),
         "repeat": 1, "week_days": 0.25}  # fmt: skip
# The simulated week (bench/week.py): a day with --quick.
WEEK_DAYS, WEEK_DAYS_QUICK = 7, 1
VERSIONED_PACKAGES = ("dagster", "dagster-dbt", "dbt-core", "dbt-duckdb", "duckdb")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # dagster-dbt gives every asset a code reference built from beta classes, and the warning
    # comes again for every asset of every build: 116,000 lines at 5,000 models, on both sides.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    plan = _plan(args)
    sizes = plan["sizes"]
    started = time.perf_counter()
    figures: list[Comparison] = []
    with tempfile.TemporaryDirectory(prefix="bench-projects-") as scratch:
        for models in sizes:
            project_dir = Path(scratch) / f"synthetic_{models}"
            generate_project(project_dir, models, seed=args.seed)
            parse_seconds = _timed_parse(project_dir)
            _progress(f"{models} models: generated and parsed ({parse_seconds:.1f} s)")
            for measure in (definitions_build, automation_ticks, dev_loop):
                measured = measure(project_dir, models, plan["repeat"])
                for figure in measured if isinstance(measured, list) else [measured]:
                    figures.append(figure)
                    _progress(_row(figure))
            figures[-1].details["full_dbt_parse_seconds"] = parse_seconds
            if models in plan["splitting_sizes"]:
                for figure in splitting(project_dir, models, plan["repeat"]):
                    figures.append(figure)
                    _progress(_row(figure))
            if models == plan["daemon_size"]:
                cadence = daemon_cadence(
                    project_dir, models, plan["daemon_seconds"], plan["daemon_interval"]
                )
                for figure in cadence:
                    figures.append(figure)
                    _progress(_row(figure))
        for sources in plan["source_sizes"]:
            for figure in source_figures(Path(scratch), sources, plan["repeat"], args.seed):
                figures.append(figure)
                _progress(_row(figure))
    figures.append(orchestration(plan["repeat"]))
    _progress(_row(figures[-1]))
    week = week_figures(plan["week_days"])
    _progress("\n".join(week_table(week)))

    report = {**_report(figures, plan, args, time.perf_counter() - started), "week": week}
    if args.json:  # first: a figure measured is never lost to the table below
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(_table(report))
    missing = _missing_figures(report)
    if missing:
        print(f"missing figures: {missing}", file=sys.stderr)
        return 1
    return 0


def _plan(args: argparse.Namespace) -> dict:
    """What to measure: the sizes, where the sensor layouts and the daemon are measured, for
    how long, and how many repetitions per side."""
    if args.smoke:
        return dict(SMOKE)
    sizes = tuple(args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES))
    return {
        "sizes": sizes,
        "splitting_sizes": tuple(models for models in sizes if models in SPLITTING_SIZES),
        "daemon_size": max((models for models in sizes if models >= 1000), default=None),
        "daemon_seconds": DAEMON_SECONDS_QUICK if args.quick else DAEMON_SECONDS,
        "daemon_interval": SENSOR_INTERVAL_SECONDS,
        "source_sizes": tuple(args.sources or SOURCE_SIZES),
        "repeat": args.repeat,
        "week_days": WEEK_DAYS_QUICK if args.quick else WEEK_DAYS,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the 100 and 1,000 sizes only")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="every kind of figure once, at 100 models (CI: proves each can be computed)",
    )
    parser.add_argument("--sizes", type=int, nargs="+", help="model counts (overrides --quick)")
    parser.add_argument("--sources", type=int, nargs="+", help="source counts (100 and 1,000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per side (median)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated projects")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    return parser


def _timed_parse(project_dir: Path) -> float:
    started = time.perf_counter()
    parse(project_dir)
    return time.perf_counter() - started


def _report(figures: list[Comparison], plan: dict, args, seconds: float) -> dict:
    ticks = {f.models: f for f in figures if f.measure == "automation tick"}
    growth = None
    sizes = plan["sizes"]
    if 1000 in ticks and max(sizes) > 1000:
        largest = ticks[max(sizes)].details["ours_seconds_per_1000_assets"]
        growth = largest / ticks[1000].details["ours_seconds_per_1000_assets"]
    return {
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "processor": _processor(),
            "python": platform.python_version(),
        },
        "versions": {name: version(name) for name in VERSIONED_PACKAGES},
        "settings": {**plan, "seed": args.seed},
        "targets": TARGETS,
        "figures": [
            {**figure.as_dict(), "target": TARGETS.get(figure.measure)} for figure in figures
        ],
        "tick_cost_per_asset_growth_from_1000": growth,
        "total_seconds": seconds,
    }


def _processor() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _missing_figures(report: dict) -> list[str]:
    plan = report["settings"]
    present = {(f["measure"], f["models"]) for f in report["figures"]}
    expected = {(measure, models) for measure in PER_SIZE_MEASURES for models in plan["sizes"]}
    expected |= {
        (f"automation, {layout}", models)
        for layout in SENSOR_LAYOUTS
        for models in plan["splitting_sizes"]
    }
    if plan["daemon_size"] is not None:
        expected |= {(f"daemon, {setting}", plan["daemon_size"]) for setting in DAEMON_SETTINGS}
    expected.add(("materialize the demo (8 assets, 28 tests)", None))
    expected |= {
        (measure, sources) for measure in SOURCE_MEASURES for sources in plan["source_sizes"]
    }
    missing = [f"{measure} @ {models}" for measure, models in sorted(expected - present, key=str)]
    missing += [
        f"{f['measure']} @ {f['models']}: {key}"
        for f in report["figures"]
        for key in ("ours_seconds", "stock_seconds", "ratio")
        if not (isinstance(f[key], float) and f[key] > 0)
    ]
    simulated = {row["automation"] for row in report.get("week", [])}
    missing += [f"a simulated week: {name}" for name in AUTOMATIONS if name not in simulated]
    return missing


def _row(figure: Comparison) -> str:
    models = "demo" if figure.models is None else f"{figure.models:,}"
    if figure.size_unit != "models":
        models += f" {figure.size_unit}"
    target = TARGETS.get(figure.measure)
    verdict = (
        "no target"
        if target is None
        else f"≤ {target} ({'met' if figure.ratio <= target else 'MISSED'})"
    )
    return (
        f"| {figure.measure} | {models} | {figure.ours}: {figure.ours_seconds:.2f} s "
        f"| {figure.stock}: {figure.stock_seconds:.2f} s | {figure.ratio:.2f} | {verdict} |"
    )


def _splitting_table(report: dict) -> list[str]:
    return _details_table(
        report,
        "threaded_round_seconds",
        ["sensors", "count", "round, one after another", "round, 4 threads",
         "slowest sensor's tick", "evaluations per asset per round",
         "between two evaluations of an asset"],
        lambda f, details: [
            f["measure"].removeprefix("automation, "), details["sensors"],
            f"{f['ours_seconds']:.2f} s", f"{details['threaded_round_seconds']:.2f} s",
            f"{details['slowest_sensor_tick_seconds']:.2f} s",
            f"{details['evaluations_per_asset_per_round']:.0f}",
            f"{details['seconds_between_evaluations_of_an_asset']:.0f} s",
        ],
    )  # fmt: skip


def _daemon_table(report: dict) -> list[str]:
    return _details_table(
        report,
        "longest_interval_seconds",
        ["dagster-daemon", "sensors", "between two evaluations of a sensor (median)",
         "(longest)", "a sensor's tick (median)", "(longest)"],
        lambda f, details: [
            f["measure"].removeprefix("daemon, "), details["sensors"],
            f"{f['ours_seconds']:.1f} s", f"{details['longest_interval_seconds']:.1f} s",
            f"{details['median_tick_seconds']:.2f} s",
            f"{details['longest_tick_seconds']:.2f} s",
        ],
    )  # fmt: skip


def _details_table(report: dict, detail: str, columns: list[str], cells) -> list[str]:
    """A table of the figures that have `detail`, one row each, after their model count."""
    rows = [
        "| " + " | ".join(map(str, [f"{f['models']:,}", *cells(f, f["details"])])) + " |"
        for f in report["figures"]
        if detail in f["details"]
    ]
    if not rows:
        return []
    header = ["models", *columns]
    return ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows]


def _table(report: dict) -> str:
    header = [
        "| measure | models | ours (median) | stock (median) | ratio | target |",
        "|---|---|---|---|---|---|",
    ]
    rows = [_row(Comparison(**_fields(f))) for f in report["figures"]]
    ticks = [f for f in report["figures"] if f["measure"] == "automation tick"]
    notes = [
        f"automation tick per 1,000 assets at {f['models']:,} models: ours "
        f"{f['details']['ours_seconds_per_1000_assets']:.2f} s, eager() "
        f"{f['details']['stock_seconds_per_1000_assets']:.2f} s"
        for f in ticks
    ]
    if report["tick_cost_per_asset_growth_from_1000"] is not None:
        notes.append(
            "growth of our per-asset tick cost from 1,000 models to the largest size: "
            f"{report['tick_cost_per_asset_growth_from_1000']:.2f}x"
        )
    machine = report["machine"]
    notes.append(
        f"{machine['cores']} cores, {machine['processor']}, Python {machine['python']}; "
        + ", ".join(f"{name} {v}" for name, v in report["versions"].items())
        + f"; {report['settings']['repeat']} repetitions per side; "
        f"{report['total_seconds'] / 60:.1f} min in all"
    )
    return "\n".join(
        [
            *header, *rows, *_splitting_table(report), *_daemon_table(report),
            *week_table(report.get("week", [])), *tick_plot(report), "", *notes,
        ]
    )  # fmt: skip


TICK_LINES = {
    "eager() on every asset": ("automation tick", "stock_seconds"),
    "project policies, every node on every tick": (
        "automation tick, every node on every tick", "ours_seconds"),
    "project policies, evaluated on change": ("automation tick", "ours_seconds"),
}  # fmt: skip


def tick_plot(report: dict) -> list[str]:
    """Mermaid charts of the per-tick time against the project's size, busy and quiet, one
    line per side (top to bottom as listed in the title), for docs/performance.md."""
    figures = {(f["measure"], f["models"]): f for f in report["figures"]}
    sizes = sorted({models for measure, models in figures if measure == "automation tick"})
    charts = []
    for kind, quiet in (("a twentieth of the seeds landed", False), ("nothing changed", True)):
        series = [
            [figures.get((_tick_measure(measure, quiet), size), {}).get(field) for size in sizes]
            for measure, field in TICK_LINES.values()
        ]
        if len(sizes) < 2 or any(None in seconds for seconds in series):
            return []
        top = max(max(seconds) for seconds in series)
        charts += [
            "",
            "```mermaid",
            "xychart-beta",
            f'    title "Automation tick, {kind} (lines: {"; ".join(TICK_LINES)})"',
            f'    x-axis "models" [{", ".join(str(models) for models in sizes)}]',
            f'    y-axis "seconds per tick" 0 --> {top * 1.1:.1f}',
            *(f"    line [{', '.join(f'{value:.2f}' for value in seconds)}]" for seconds in series),
            "```",
        ]
    return charts


def _tick_measure(measure: str, quiet: bool) -> str:
    quiet_measure = measure.replace("automation tick", "automation tick, nothing changed")
    return quiet_measure if quiet else measure


def _fields(figure: dict) -> dict:
    return {key: value for key, value in figure.items() if key not in {"ratio", "target"}}


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
