"""The dev server answers where the README says, and Ctrl-C or SIGTERM leaves no Dagster process
behind."""

import signal

import pytest

from harness import copy_dagster_project
from live_server import DevServer, kill_leftovers, processes_under

pytestmark = pytest.mark.live


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_stopping_the_server_leaves_no_dagster_process(tmp_path, sig):
    project = copy_dagster_project(tmp_path / "project")
    dev = DevServer(project, tmp_path / "dev-server.log").start()
    try:
        assert len(processes_under(project)) >= 3  # launcher, dg dev, webserver, daemon, ...
        dev.stop(sig)
        assert processes_under(project) == {}
    finally:
        kill_leftovers(project)


def test_dev_server_with_no_arguments_serves_on_127_0_0_1_port_3000(tmp_path):
    project = copy_dagster_project(tmp_path / "project")
    dev = DevServer(project, tmp_path / "dev-server.log", as_documented=True)
    try:
        dev.start()  # waits until http://127.0.0.1:3000/graphql lists the assets
        assert dev.url == "http://127.0.0.1:3000"
        assert "dg dev --host 127.0.0.1 --port 3000" in dev.log.read_text()
        dev.stop()
    finally:
        kill_leftovers(project)
