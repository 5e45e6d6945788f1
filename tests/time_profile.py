"""Where the suite's time goes: each test's wall time, split into CPU and waiting.

A pytest plugin (`-p time_profile`, always on): every phase of a test (setup, call, teardown)
is timed on the wall clock and in CPU seconds, the CPU of the test process and of every process
it started: those still running (a dev server, dbt) and those it reaped (each counts its own
reaped children). What is not CPU is waiting: sleeps, polls, sensor intervals, a run queue, or
the other worker's use of the cores. A process that ends without being reaped by the test's
processes (orphaned by a kill) takes the CPU it used since the phase began with it.

`pytest --time-profile=PATH` writes every phase as JSON; `python tests/time_profile.py PATH`
prints the table that docs/ci-time.md keeps.
"""

import json
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

import psutil
import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--time-profile",
        type=Path,
        help="write each test phase's wall and CPU seconds to this JSON file",
    )


def cpu_seconds() -> float:
    """CPU seconds of this process, its reaped children, and its live descendants."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    live = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        # With the children it reaped: a server that outlives the test (the preloaded dbt, a
        # dev server) reaps what it started for the test, whose CPU would otherwise surface
        # only when the worker reaps the server, in the phase that stops it.
        live += times.user + times.system + times.children_user + times.children_system
    return own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime + live


def _timed_phase(item: pytest.Item, phase: str):
    wall, cpu = time.perf_counter(), cpu_seconds()
    yield
    item.user_properties.append(
        (f"time_profile_{phase}", (time.perf_counter() - wall, max(0.0, cpu_seconds() - cpu)))
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    yield from _timed_phase(item, "setup")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    yield from _timed_phase(item, "call")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item):
    yield from _timed_phase(item, "teardown")


class Recorder:
    """On the process that reports (xdist's controller, or the only process): the phases."""

    def __init__(self, path: Path):
        self.path = path
        self.phases: list[dict] = []
        self.started = time.time()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for name, value in report.user_properties:
            if name == f"time_profile_{report.when}":
                wall, cpu = value
                self.phases.append(
                    {"test": report.nodeid, "phase": report.when, "wall": wall, "cpu": cpu}
                )

    def pytest_sessionfinish(self) -> None:
        self.path.write_text(
            json.dumps({"wall_seconds": time.time() - self.started, "phases": self.phases})
        )


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("--time-profile", None)
    if path and not hasattr(config, "workerinput"):  # the controller records, not the workers
        config.pluginmanager.register(Recorder(path), "time_profile_recorder")


def per_test(phases: list[dict]) -> dict[str, tuple[float, float]]:
    """Wall and CPU seconds per test, its phases added up."""
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for phase in phases:
        totals[phase["test"]][0] += phase["wall"]
        totals[phase["test"]][1] += phase["cpu"]
    return {test: (wall, cpu) for test, (wall, cpu) in totals.items()}


def table(profile: dict, slowest: int = 25) -> str:
    """Markdown: per test file, then the slowest tests, each wall = CPU + waiting."""
    tests = per_test(profile["phases"])
    files: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for test, (wall, cpu) in tests.items():
        entry = files[test.split("::")[0]]
        entry[0] += 1
        entry[1] += wall
        entry[2] += cpu

    def row(name: str, wall: float, cpu: float, *extra: object) -> str:
        cells = [name, *map(str, extra), f"{wall:.0f}", f"{cpu:.0f}", f"{max(0, wall - cpu):.0f}"]
        return "| " + " | ".join(cells) + " |"

    wall_all = sum(wall for wall, _ in tests.values())
    cpu_all = sum(cpu for _, cpu in tests.values())
    lines = [
        "| test file | tests | wall s | CPU s | waiting s |",
        "|---|---|---|---|---|",
        *(
            row(f"`{name}`", wall, cpu, count)
            for name, (count, wall, cpu) in sorted(files.items(), key=lambda f: -f[1][1])
        ),
        row("**all**", wall_all, cpu_all, len(tests)),
        "",
        f"The {slowest} slowest tests (setup, call and teardown added up):",
        "",
        "| test | wall s | CPU s | waiting s |",
        "|---|---|---|---|",
        *(
            row(f"`{test}`", wall, cpu)
            for test, (wall, cpu) in sorted(tests.items(), key=lambda t: -t[1][0])[:slowest]
        ),
        "",
        f"Summed over the workers; the session took {profile['wall_seconds']:.0f} s of wall time.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(json.loads(Path(sys.argv[1]).read_text())))
