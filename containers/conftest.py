"""The Docker engine the container tests share."""

import subprocess
from collections.abc import Iterator

import pytest
from docker_harness import docker

from live_server import wait_for


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory) -> Iterator[None]:
    """The Docker engine: the one running, or Debian's dockerd started here (and stopped)."""
    if docker("info").returncode == 0:
        yield
        return
    log = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    with log.open("w") as out:
        # No bridge network to set up: the containers use the host's network.
        dockerd = subprocess.Popen(
            ["dockerd", "--bridge=none", "--iptables=false"], stdout=out, stderr=out
        )
    try:
        wait_for("the Docker engine", lambda: docker("info").returncode == 0, 60)
        yield
    finally:
        dockerd.terminate()
        dockerd.wait(timeout=60)
