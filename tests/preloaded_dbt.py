"""`dbt`, started as a fork of a Python process that has imported dbt already: for the scenario
tests, whose real runs start one `dbt build` each.

A new `dbt` process spends about 1.4 of its 2.4 CPU seconds here importing dbt, and the scenario
modules start some 120 of them (docs/ci-time.md). In those modules the `dbt` on PATH is
`CLIENT`: a small script that hands its arguments, environment, working directory and standard
streams to this module's server. The server has imported dbt, its DuckDB adapter and the
commands' modules once; it forks, and the fork runs dbt's own command-line entry point with those
streams, as the `dbt` script would. Nothing else changes: dagster-dbt still starts a process,
reads dbt's JSON log lines from its stdout, and signals it (the client passes SIGINT and SIGTERM
on to the dbt it started, and exits with dbt's exit code).

Before it serves, the server runs dbt once itself on a copy of the shipped project (parse,
build, source freshness), about 4 CPU seconds: dbt's classes compile their (de)serializers on
their first use (mashumaro's lazy compilation), and a fork of a server that never ran dbt
compiled them again in every `dbt build`. Measured: a one-view build in a fork 0.96-1.05 CPU
seconds before, 0.46-0.58 after; the 48 forks of `test_automation_views.py` on SQLite 23.0
before, 10.0 after. The server then closes the DuckDB database of that run, and forks only
once it is again a process of one thread.

The tests of how a run starts and stops dbt (a cancel, kill -9, `dbt --version` never asked, the
dev server's runs) keep the real `dbt` executable: only tests that ask for the
`dbt_from_a_preloaded_process` fixture get this one. `nox -s demo` runs with the real one in CI's
container step (the Codespaces door), and with this one in `tests/test_nox_sessions.py`.
"""

import atexit
import contextlib
import gc
import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing import resource_tracker
from pathlib import Path

import psutil

from dbt_automation_demo.internals.blocking_tests import (
    DBT_EXECUTABLE,
    add_edges_below_tested_models,
)

# What every `dbt build` of a DuckDB project imports after dbt's command line (the server's
# start-up is paid once per test worker).
PRELOADED = (
    "dbt.cli.main",
    "dbt.adapters.duckdb",
    "dbt.task.build",
    "dbt.parser.manifest",
    "dbt.compilation",
    "duckdb",
)
# The classes whose JSON schema every dbt command builds to validate its project, profile and
# results (0.5 s a process); dbt caches each schema in its process, so the forks find them built.
VALIDATED = (
    "dbt.contracts.project:Configuration",
    "dbt.contracts.project:PackageConfig",
    "dbt.contracts.project:ProfileConfig",
    "dbt.contracts.project:Project",
    "dbt.contracts.project:ProjectFlags",
    "dbt.contracts.selection:SelectorFile",
    "dbt.adapters.duckdb.credentials:DuckDBCredentials",
    "dbt.task.test:TestResultData",
)

# The scripts it stands for: dbt's, and the component's `dbt` (blocking_tests.py's).
SCRIPTS = ("dbt", DBT_EXECUTABLE)

SHORT_TMP = "/tmp" if os.path.isdir("/tmp") else None
# How often the server checks that the test worker that started it still lives.
PARENT_CHECK_SECONDS = 2.0
# The commands the server runs once before it serves (their code paths are the forks'), with
# the exit codes that mean they ran to their end: the shipped batch is old, so the freshness
# check of a copy says its source is stale (exit code 1).
WARM_UP = ((["parse"], {0}), (["build"], {0}), (["source", "freshness"], {0, 1}))
# How long DuckDB's threads may take to end once its database is closed.
THREADS_END_SECONDS = 10.0

CLIENT = """\
#!{python} -S
# `dbt`, run by a fork of {server} (tests/preloaded_dbt.py); nothing here imports dbt.
import json, os, signal, socket, sys
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.connect({socket_path!r})
socket.send_fds(server, [b"."], [0, 1, 2])
argv = [os.path.basename(sys.argv[0]), *sys.argv[1:]]
request = {{"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}}
server.sendall(json.dumps(request).encode() + b"\\n")
replies = server.makefile("r")
dbt = json.loads(replies.readline())["pid"]


def forward(signum, frame):
    try:
        os.kill(dbt, signum)
    except ProcessLookupError:
        pass


signal.signal(signal.SIGINT, forward)
signal.signal(signal.SIGTERM, forward)
exit_code = replies.readline().strip()
sys.exit(int(exit_code) if exit_code else 1)  # no code: dbt was killed before it could send one
"""


@contextmanager
def running(folder: Path) -> Iterator[Path]:
    """A server in `folder`, and the folder holding its `dbt` client, to put first on PATH.

    The server first builds a copy of the shipped dbt project, made here in `folder`."""
    # Imported by the test worker only: the server, whose forks run dbt, never imports Dagster.
    from harness import copy_dbt_project

    warm_up_project = copy_dbt_project(folder / "warm-up" / "analytics_dbt")
    # A socket's path has at most 104 bytes on macOS (108 on Linux), fewer than a test folder
    # under macOS's TMPDIR may take: the socket gets a short folder of its own.
    with (
        tempfile.TemporaryDirectory(prefix="dbt-", dir=SHORT_TMP) as socket_dir,
        _serving(folder, Path(socket_dir) / "server.sock", warm_up_project) as client_dir,
    ):
        yield client_dir


@contextmanager
def _serving(folder: Path, socket_path: Path, warm_up_project: Path) -> Iterator[Path]:
    client_dir = folder / "bin"
    client_dir.mkdir()
    for name in SCRIPTS:
        client = client_dir / name
        client.write_text(
            CLIENT.format(python=sys.executable, server=__file__, socket_path=str(socket_path))
        )
        client.chmod(0o755)
    with open(folder / "server.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, __file__, str(socket_path), str(os.getpid()), str(warm_up_project)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for(socket_path, server, folder / "server.log")
        yield client_dir
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _wait_for(socket_path: Path, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while not socket_path.exists():
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the preloaded dbt server did not start; its log: {log}")
        time.sleep(0.05)


def serve(socket_path: str, worker: int, warm_up_project: Path) -> None:
    # An ignored signal stays ignored in a new program, and a test worker was seen ignoring
    # SIGTERM and SIGINT after some tests: the server then outlived `terminate()`, and its worker
    # waited for it forever at the end of the session.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # A worker that is killed (kill -9, a crashed run of the interleavings) terminates nothing: a
    # server once outlived its worker by 86 minutes. A timer's signal, not a thread (a thread
    # would make every fork below a fork of a multi-threaded process).
    signal.signal(signal.SIGALRM, lambda signum, frame: _exit_if_orphaned(worker, socket_path))
    signal.setitimer(signal.ITIMER_REAL, PARENT_CHECK_SECONDS, PARENT_CHECK_SECONDS)
    for module in PRELOADED:
        importlib.import_module(module)
    for name in VALIDATED:
        module, cls = name.split(":")
        getattr(importlib.import_module(module), cls).json_schema()
    import dbt.version

    # dagster-dbt asks the `dbt` it starts for its version before each run, unless it is this
    # environment's own `dbt` (the client is not); dbt's answer includes the latest release,
    # which it asks PyPI for (up to a second). The forks answer with the installed one only.
    dbt.version.get_latest_version = lambda *args, **kwargs: None
    # dbt's semaphores register with multiprocessing's tracker process: one for all forks.
    resource_tracker.ensure_running()
    _warm_up(warm_up_project)
    # Each fork is reaped as it ends, so that its CPU time counts as this server's children's
    # (tests/time_profile.py reads it when the server ends).
    signal.signal(signal.SIGCHLD, _reap_forks)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path + ".new")
    listener.listen(16)
    os.rename(socket_path + ".new", socket_path)  # the client's wait ends on a listening socket
    while True:
        connection, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            exit_code = _run_dbt(connection)
            # What exiting runs (dbt's semaphores are released there), without tearing down
            # the interpreter's modules one by one (0.4 s).
            atexit._run_exitfuncs()
            os._exit(exit_code)
        connection.close()


def _warm_up(project: Path) -> None:
    """Runs `WARM_UP` on `project`, as a fork would, then leaves this process as it found it: its
    directory, environment and arguments, no DuckDB database open, and one thread."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    directory, environment, arguments = os.getcwd(), dict(os.environ), sys.argv
    os.chdir(project)
    os.environ["DBT_DUCKDB_PATH"] = str(project.parent / "warm-up.duckdb")
    for setting in ("DBT_LANDING_ZONE", "DBT_TARGET"):  # the copy's own landing zone, dev
        os.environ.pop(setting, None)
    # dbt's static parser (dbt_extractor) starts a pool of threads that lives as long as its
    # process: a fork would inherit the pool's state without its threads, and a parse in the
    # fork would wait for them forever. The forks start their own; the warm-up renders instead.
    os.environ["DBT_STATIC_PARSER"] = "false"
    try:
        for command, finished in WARM_UP:
            sys.argv = ["dbt", *command, "--project-dir", ".", "--profiles-dir", "."]
            sys.argv += ["--log-format", "json"]  # what dagster-dbt asks for
            if (exit_code := _dbt_cli()) not in finished:
                raise RuntimeError(
                    f"the warm-up's `dbt {' '.join(command)}` exited {exit_code} in {project}"
                )
    finally:
        os.chdir(directory)
        os.environ.clear()
        os.environ.update(environment)
        sys.argv = arguments
    # dbt-duckdb keeps the database open for the next command; its threads end once it closes.
    DuckDBConnectionManager.close_all_connections()
    gc.collect()
    _wait_until_one_thread()


def _wait_until_one_thread() -> None:
    """A fork of a process with other threads may inherit a lock one of them held."""
    deadline = time.monotonic() + THREADS_END_SECONDS
    while (threads := psutil.Process().num_threads()) > 1:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{threads} threads still run after the warm-up")
        time.sleep(0.05)


def _exit_if_orphaned(worker: int, socket_path: str) -> None:
    """Ends the server once the test worker that started it is gone (it is then reparented),
    and removes the socket's folder, which that worker can no longer remove."""
    if os.getppid() != worker:
        shutil.rmtree(os.path.dirname(socket_path), ignore_errors=True)
        os._exit(0)


def _reap_forks(signum: int, frame: object) -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _run_dbt(client: socket.socket) -> int:
    """In the fork: become the `dbt` process the client stands for; its exit code."""
    exit_code = 1
    try:
        _, streams, _, _ = socket.recv_fds(client, 1, 3)
        request = json.loads(client.makefile("rb").readline())
        for target, stream in enumerate(streams):
            os.dup2(stream, target)
            os.close(stream)
        sys.stdout.reconfigure(line_buffering=True)  # each JSON log line as dbt writes it
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # a fork inherits no timer, only this
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        client.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
        sys.argv = request["argv"]
        exit_code = _dbt_cli()
    except BaseException:
        traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    client.sendall(f"{exit_code}\n".encode())
    return exit_code


def _dbt_cli() -> int:
    """What the script named by `argv[0]` does: dbt's click command, which exits with dbt's
    exit code, with blocking_tests.py's edges for the component's `dbt`."""
    from dbt.cli.main import cli

    if sys.argv[0] == DBT_EXECUTABLE:
        add_edges_below_tested_models()

    try:
        cli()
    except SystemExit as exit:
        if exit.code is None or isinstance(exit.code, int):
            return exit.code or 0
        print(exit.code, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
