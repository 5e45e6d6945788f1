"""`nox -s dev`: `dg dev` on 127.0.0.1:3000 that leaves no Dagster process behind when stopped.

`dg dev` starts the webserver, the daemon and a code server as children. On SIGTERM, dg 1.13
stops them all before it exits (within about 3 s here; an earlier version left its code server
~45 s more), but a `dg dev` that is killed or hangs leaves them running. Here `dg dev` runs in a
process group of its own, and every way of stopping (Ctrl-C, SIGTERM, SIGHUP, the parent going
away) stops the whole group, escalating to SIGKILL after a grace period.

Usage: python -m dbt_automation_demo.dev_server [dg dev arguments, e.g. --port 3001]
"""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import yaml

from dbt_automation_demo.instance_storage import postgres_storage_problem

DEFS_FOLDER = Path(__file__).parent / "defs"
DEFAULT_ARGS = ("--host", "127.0.0.1", "--port", "3000")
GRACE_SECONDS = 20
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def dg_dev_command(extra_args: Sequence[str]) -> list[str]:
    """`dg dev` with the defaults, each overridden when the caller passes the same option."""
    given = set(extra_args)
    defaults = []
    for flag, value in zip(DEFAULT_ARGS[::2], DEFAULT_ARGS[1::2], strict=True):
        short = {"--host": "-h", "--port": "-p"}[flag]
        if flag not in given and short not in given and not _has_equals_form(given, flag):
            defaults += [flag, value]
    return [_dg_executable(), "dev", *defaults, *extra_args]


def _dg_executable() -> str:
    # The `dg` of this interpreter's environment, even when that environment is not activated.
    beside_python = Path(sys.executable).parent / "dg"
    return str(beside_python) if beside_python.exists() else "dg"


def _has_equals_form(args: set[str], flag: str) -> bool:
    return any(arg.startswith(f"{flag}=") for arg in args)


def stop_group(process: subprocess.Popen, grace_seconds: float = GRACE_SECONDS) -> int:
    """SIGTERM the process group, wait, then SIGKILL whatever is left of it."""
    _signal_group(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_seconds)
    # Children (the code server) can outlive the group leader: always sweep the group.
    deadline = time.monotonic() + grace_seconds
    while _group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    _signal_group(process.pid, signal.SIGKILL)
    return process.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def prepare_instance() -> None:
    """Create the instance's storage and its pools' limits before `dg dev` starts.

    - `dg dev` starts three processes that open the instance at once: on a fresh SQLite
      DAGSTER_HOME each would create the schema, and together they can leave it broken
      ("Version table 'alembic_version' has more than one head").
    - Dagster's run queue writes a pool's default limit the first time it sees a queued run that
      needs the pool, but only after deciding which runs to start on that pass: runs queued
      together on a fresh instance would all start at once, past the limit.
    """
    with dg.DagsterInstance.get() as instance:
        for pool in declared_pools():
            instance.event_log_storage.initialize_concurrency_limit_to_default(pool)


def declared_pools(defs_folder: Path = DEFS_FOLDER) -> set[str]:
    """The pools this project's components run their ops in (`attributes.op.pool` in defs.yaml)."""
    return {
        document["attributes"]["op"]["pool"]
        for path in defs_folder.rglob("defs.yaml")
        for document in yaml.safe_load_all(path.read_text())
        if "pool" in ((document or {}).get("attributes") or {}).get("op", {})
    }


def main(argv: Sequence[str] | None = None) -> int:
    problem = postgres_storage_problem(Path(os.environ.get("DAGSTER_HOME", ".")))
    if problem:
        print(f"not starting the dev server: {problem}", file=sys.stderr, flush=True)
        return 2
    prepare_instance()
    command = dg_dev_command(sys.argv[1:] if argv is None else argv)
    print(f"starting: {' '.join(command)}", flush=True)
    process = subprocess.Popen(command, start_new_session=True)
    stopping = threading.Event()

    def request_stop(*_: object) -> None:
        stopping.set()

    for sig in STOP_SIGNALS:
        signal.signal(sig, request_stop)
    parent = os.getppid()
    while process.poll() is None and not stopping.is_set():
        if os.getppid() != parent:  # whoever started us is gone (e.g. nox was killed)
            break
        stopping.wait(0.5)
    return stop_group(process)


if __name__ == "__main__":
    sys.exit(main())
