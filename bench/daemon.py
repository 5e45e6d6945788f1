"""A real `dagster-daemon` evaluating the component's automation sensors, for a few minutes.

The sensors are the shipped configuration's (one per 500 assets), evaluated in a code server of
their own that the daemon reaches over gRPC, as in the production deployment
(deploy/compose/workspace.yaml, the image's `dagster code-server start`); new data lands on a
twentieth of the seeds every sensor interval, as in the tick measure. Runs the sensors request
are queued and never started (the queue's limit is 0): what is measured is how often each
sensor is evaluated, not dbt.

A workspace that names a Python file instead makes the daemon start the code server itself and
replace it with a new one every minute: at 5,000 models each new server spends tens of seconds
building the definitions on the cores the sensors are evaluated on; the production deployment
serves its code from a container of its own instead (docs/performance.md).
"""

import contextlib
import itertools
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import dagster as dg
from dagster._core.errors import DagsterUserCodeUnreachableError
from dagster._grpc.client import DagsterGrpcClient
from dagster._grpc.types import ListRepositoriesResponse
from dagster_shared.serdes import deserialize_value

from bench.measure import (
    SENSOR_INTERVAL_SECONDS,
    Comparison,
    report_materialized,
    seeds_landing,
)
from dbt_automation_demo.dev_server import stop_group

DAEMON_SETTINGS = {
    "sensors one after another": "",
    "4 sensor threads": "sensors:\n  use_threads: true\n  num_workers: 4\n",
}


def daemon_cadence(
    project_dir: Path, models: int, seconds: float, interval: int = SENSOR_INTERVAL_SECONDS
) -> list[Comparison]:
    """For each daemon setting: the median and the longest time between two evaluations of
    the same sensor (so of each of its assets), against the sensor's interval (the shipped
    30 s, or another for a short smoke run)."""
    figures = []
    for setting, yaml in DAEMON_SETTINGS.items():
        with tempfile.TemporaryDirectory(prefix="bench-daemon-") as scratch:
            intervals, durations, sensors = _run_daemon(
                project_dir, Path(scratch), yaml, seconds, interval
            )
        figures.append(
            Comparison(
                f"daemon, {setting}",
                models,
                "median time between two evaluations of a sensor",
                "the sensor's interval",
                statistics.median(intervals),
                float(interval),
                len(intervals),
                details={
                    "sensors": sensors,
                    "longest_interval_seconds": max(intervals),
                    "median_tick_seconds": statistics.median(durations),
                    "longest_tick_seconds": max(durations),
                    "measured_seconds": seconds,
                },
            )
        )
    return figures


def _run_daemon(
    project_dir: Path, scratch: Path, settings_yaml: str, seconds: float, interval: int
) -> tuple[list[float], list[float], int]:
    home = scratch / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        "run_coordinator:\n  module: dagster.core.run_coordinator\n"
        "  class: QueuedRunCoordinator\n  config:\n    max_concurrent_runs: 0\n" + settings_yaml
    )
    definitions = scratch / "definitions.py"
    definitions.write_text(_DEFINITIONS.format(project_dir=str(project_dir), interval=interval))
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    seeds = _everything_built(home, definitions)
    log = scratch / "daemon.log"
    try:
        with log.open("w") as output, _code_server(definitions, env, output) as port:
            (scratch / "workspace.yaml").write_text(
                "load_from:\n  - grpc_server:\n      host: 127.0.0.1\n"
                f"      port: {port}\n      location_name: synthetic\n"
            )
            workspace = str(scratch / "workspace.yaml")
            daemon = subprocess.Popen(
                [sys.executable, "-m", "dagster._daemon", "run", "-w", workspace],
                env=env,
                cwd=scratch,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                with dg.DagsterInstance.from_config(str(home)) as instance:
                    started = _wait_for_every_sensor_tick(instance, daemon)
                    _land_data_until(instance, seeds, started + seconds, interval)
                    return _tick_intervals(instance)
            finally:
                stop_group(daemon)
    except (RuntimeError, TimeoutError) as failure:
        tail = log.read_text()[-3000:]  # the daemon's and the code server's output
        raise RuntimeError(f"{failure}; their log ends:\n{tail}") from failure


@contextlib.contextmanager
def _code_server(definitions: Path, env: dict, output: IO) -> Iterator[int]:
    """The definitions served on a free port of loopback by `dagster code-server start`, as the
    production image serves them; yields the port once their repository is loaded."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "dagster", "code-server", "start", "--host", "127.0.0.1",
         "--port", str(port), "--python-file", str(definitions), "--location-name", "synthetic"],
        env=env,
        cwd=definitions.parent,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        _wait_until_loaded(DagsterGrpcClient(port=port, host="127.0.0.1"), server)
        yield port
    finally:
        stop_group(server)


def _wait_until_loaded(client: DagsterGrpcClient, server: subprocess.Popen) -> None:
    """Until the code server lists the repository; its load error, if the code failed to load
    (while it loads, or before it listens, the call itself fails)."""
    deadline = time.time() + 600
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the code server exited with {server.returncode}")
        try:
            response = deserialize_value(client.list_repositories())
        except DagsterUserCodeUnreachableError:
            time.sleep(1)
            continue
        if isinstance(response, ListRepositoriesResponse):
            return
        raise RuntimeError(f"the code server could not load the definitions: {response}")
    raise TimeoutError("the code server did not load the definitions within 10 minutes")


def _everything_built(home: Path, definitions: Path) -> list[dg.AssetKey]:
    namespace: dict = {}
    exec(compile(definitions.read_text(), str(definitions), "exec"), namespace)
    graph = namespace["defs"].resolve_asset_graph()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        report_materialized(instance, graph.materializable_asset_keys)
    return sorted(key for key in graph.materializable_asset_keys if key.path[-1][:5] == "seed_")


def _wait_for_every_sensor_tick(instance: dg.DagsterInstance, daemon: subprocess.Popen) -> float:
    """When every sensor has ended its first evaluation (which has no cursor yet)."""
    deadline = time.time() + 300
    while time.time() < deadline:
        if daemon.poll() is not None:
            raise RuntimeError(f"dagster-daemon exited with {daemon.returncode}")
        ticks = _ticks(instance)
        if ticks and all(any(t.end_timestamp for t in sensor) for sensor in ticks.values()):
            return time.time()
        time.sleep(2)
    raise TimeoutError("the automation sensors were not all evaluated within 5 minutes")


def _land_data_until(
    instance: dg.DagsterInstance, seeds: list, until: float, interval: int
) -> None:
    landing = 0
    while time.time() < until:
        report_materialized(instance, seeds_landing(seeds, landing))
        landing += 1
        time.sleep(min(interval, max(0.0, until - time.time())))


def _tick_intervals(instance: dg.DagsterInstance) -> tuple[list[float], list[float], int]:
    """Between the starts of consecutive evaluations of each sensor, and each evaluation's
    length (not the first's: it has no cursor yet, and requests nothing)."""
    intervals, durations = [], []
    ticks = _ticks(instance)
    for sensor_ticks in ticks.values():
        ended = sorted((t for t in sensor_ticks if t.end_timestamp), key=lambda t: t.timestamp)
        starts = [t.timestamp for t in ended]
        intervals += [later - earlier for earlier, later in itertools.pairwise(starts)]
        durations += [t.end_timestamp - t.timestamp for t in ended[1:]]
    if not intervals:
        raise RuntimeError("no sensor was evaluated twice in the measured time")
    return intervals, durations, len(ticks)


def _ticks(instance: dg.DagsterInstance) -> dict[str, list]:
    return {
        state.instigator_name: instance.get_ticks(state.instigator_origin_id, state.selector_id)
        for state in instance.all_instigator_state()
        if state.instigator_type.value == "SENSOR"
    }


_DEFINITIONS = textwrap.dedent(
    """\
    import warnings

    import dagster as dg
    from dagster.components.core.component_tree import ComponentTree
    from dagster_dbt import DbtProject

    from dbt_automation_demo.components.custom_dbt_component import (
        AutomationSensorArgs,
        CustomDbtComponent,
    )

    warnings.filterwarnings("ignore", category=dg.BetaWarning)  # one per asset
    # A DbtProject with its manifest: the component needs no state refreshed.
    project = DbtProject(project_dir={project_dir!r}, profiles_dir={project_dir!r})
    sensor = AutomationSensorArgs(minimum_interval_seconds={interval})
    defs = CustomDbtComponent(project=project, automation_sensor=sensor).build_defs_from_state(
        ComponentTree.for_test().load_context, state_path=None
    )
    """
)
