"""The dev server answers where the README says, and Ctrl-C or SIGTERM leaves no Dagster process
behind.

The first two tests share one server, started as the README starts it, and run in order: it
serves on 127.0.0.1:3000, then SIGTERM stops it.
"""

import signal
import socket
from collections.abc import Iterator

import pytest

from harness import copy_dagster_project
from live_server import DOCUMENTED_PORT, DevServer, kill_leftovers, processes_under

pytestmark = pytest.mark.live


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def documented_server(tmp_path_factory) -> Iterator[DevServer]:
    """`nox -s dev`'s server with no arguments, on a port nothing else answered on before."""
    assert port_is_free(DOCUMENTED_PORT), f"something already listens on {DOCUMENTED_PORT}"
    folder = tmp_path_factory.mktemp("documented")
    project = copy_dagster_project(folder / "project")
    dev = DevServer(project, folder / "dev-server.log", as_documented=True)
    try:
        yield dev.start()  # waits until http://127.0.0.1:3000/graphql lists the assets
    finally:
        if dev.process.poll() is None:
            dev.stop()
        kill_leftovers(project)


def test_dev_server_with_no_arguments_serves_on_127_0_0_1_port_3000(documented_server):
    assert documented_server.url == "http://127.0.0.1:3000"
    assert "dg dev --host 127.0.0.1 --port 3000" in documented_server.log.read_text()


def test_sigterm_leaves_no_dagster_process(documented_server):
    expect_no_process_left_after(documented_server, signal.SIGTERM)


def test_ctrl_c_leaves_no_dagster_process(tmp_path):
    project = copy_dagster_project(tmp_path / "project")
    dev = DevServer(project, tmp_path / "dev-server.log").start()
    try:
        expect_no_process_left_after(dev, signal.SIGINT)
    finally:
        kill_leftovers(project)


def expect_no_process_left_after(dev: DevServer, sig: signal.Signals) -> None:
    assert len(processes_under(dev.project)) >= 3  # launcher, dg dev, webserver, daemon, ...
    dev.stop(sig)
    assert processes_under(dev.project) == {}
