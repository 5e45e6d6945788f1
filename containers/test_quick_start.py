"""The README's quick start on the Pythons newcomers bring (`nox -s container`): Debian 12's
own `python3`, whose pip refuses to install outside a venv (PEP 668: the `EXTERNALLY-MANAGED`
marker is kept), and a plain venv on it.

The image is Debian bookworm with Python, pip and venv from Debian's packages (pulled nowhere:
`containers/base_images.sh` builds it with mmdebstrap). The quick-start block runs as written up
to its first session, then `nox -s check`, which installs the whole lock and loads every
definition; the suite itself runs through the same lines in `.ci/run`.
"""

import subprocess
from collections.abc import Iterator

import pytest
from docker_harness import DOCKER, base_images, checkout_copy, docker

from harness import readme_block

pytestmark = pytest.mark.container

DEBIAN = "dbt-automation-demo/bookworm-stand-in"
HOME = "/root"


def bootstrap_lines() -> list[str]:
    """The quick start up to its first session."""
    lines = readme_block("quick-start").splitlines()
    first_session = next(i for i, line in enumerate(lines) if line.startswith("nox "))
    assert first_session == 2, lines  # the venv with the two tools, then PATH
    return lines[:first_session]


QUICK_START_THEN_CHECK = "\n".join([*bootstrap_lines(), "command -v nox", "nox -s check"])


@pytest.fixture(scope="module")
def debian(docker_engine, tmp_path_factory) -> Iterator[str]:
    """A Debian 12 container holding two fresh copies of the checkout; removed at the end."""
    base_images(DEBIAN)
    started = docker("run", "--detach", "--network=host", DEBIAN, "sleep", "infinity")
    assert started.returncode == 0, started.stderr
    container = started.stdout.strip()
    try:
        checkout = checkout_copy(tmp_path_factory.mktemp("quick-start") / "dbt-automation-demo")
        for name in ("on-system-python", "in-a-venv"):
            copied = docker("cp", f"{checkout}/.", f"{container}:{HOME}/{name}")
            assert copied.returncode == 0, copied.stderr
        yield container
    finally:
        subprocess.run([DOCKER, "rm", "--force", container], check=True, capture_output=True)


def bash(container: str, script: str, workdir: str = HOME) -> subprocess.CompletedProcess:
    return docker(
        "exec", "--workdir", workdir, container, "bash", "-euo", "pipefail", "-c", script,
        timeout=1200,
    )  # fmt: skip


def test_debians_python_refuses_pip_outside_a_venv(debian):
    refused = bash(debian, 'python3 -m pip install "nox==2026.10.20"')
    assert refused.returncode != 0
    assert "error: externally-managed-environment" in refused.stderr
    marker = bash(debian, "python3 -c 'import sysconfig; print(sysconfig.get_path(\"stdlib\"))'")
    assert bash(debian, f"test -f {marker.stdout.strip()}/EXTERNALLY-MANAGED").returncode == 0


def test_the_quick_start_runs_on_debians_system_python(debian):
    ran = bash(debian, QUICK_START_THEN_CHECK, workdir=f"{HOME}/on-system-python")
    assert ran.returncode == 0, ran.stdout[-5000:] + ran.stderr[-5000:]
    assert f"{HOME}/on-system-python/.tools/bin/nox" in ran.stdout.splitlines()  # command -v
    assert "All definitions loaded successfully." in ran.stdout + ran.stderr


def test_the_quick_start_runs_inside_a_plain_venv(debian):
    in_a_venv = f"python3 -m venv {HOME}/plain && . {HOME}/plain/bin/activate\n"
    ran = bash(debian, in_a_venv + QUICK_START_THEN_CHECK, workdir=f"{HOME}/in-a-venv")
    assert ran.returncode == 0, ran.stdout[-5000:] + ran.stderr[-5000:]
    assert f"{HOME}/in-a-venv/.tools/bin/nox" in ran.stdout.splitlines()
    assert "All definitions loaded successfully." in ran.stdout + ran.stderr
