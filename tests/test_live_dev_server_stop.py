"""Ctrl-C or SIGTERM on the dev server leaves no Dagster process behind."""

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
