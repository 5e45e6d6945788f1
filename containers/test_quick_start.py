"""The README's quick start on the Pythons newcomers bring (`nox -s container`): Debian 12's
own `python3` (3.11) and Debian 13's (3.13), whose pip refuses to install outside a venv (PEP 668:
the `EXTERNALLY-MANAGED` marker is kept), and a plain venv on Debian 12's.

The images are Debian bookworm and trixie with Python, pip and venv from Debian's packages
(pulled nowhere: `containers/base_images.sh` builds them with mmdebstrap); trixie's also has what
the README says `nox -s tests` needs (PostgreSQL's server, Chromium, curl). The quick-start block
runs as written up to its first session, then `nox -s check`, which installs the whole lock and
loads every definition; on Debian 13, then a named subset of `nox -s tests` that loads the
definitions, ticks the sensor and materializes through dbt, on SQLite and PostgreSQL (the tests
marked `every_python`). The whole suite runs through the same lines on Debian 12's Python in
`.ci/run`.
"""

import subprocess
from collections.abc import Iterator

import pytest
from docker_harness import DOCKER, base_images, checkout_copy, docker

from harness import readme_block

pytestmark = pytest.mark.container

DEBIAN_12 = "dbt-automation-demo/bookworm-stand-in"
DEBIAN_13 = "dbt-automation-demo/trixie-stand-in"
HOME = "/root"


def bootstrap_lines() -> list[str]:
    """The quick start up to its first session."""
    lines = readme_block("quick-start").splitlines()
    first_session = next(i for i, line in enumerate(lines) if line.startswith("nox "))
    assert first_session == 2, lines  # the venv with the two tools, then PATH
    return lines[:first_session]


QUICK_START_THEN_CHECK = "\n".join([*bootstrap_lines(), "command -v nox", "nox -s check"])


def debian(image: str, tmp_path_factory, copies: tuple[str, ...]) -> Iterator[str]:
    """A container of `image` holding fresh copies of the checkout, one per name; removed at the
    end."""
    base_images(image)
    started = docker("run", "--detach", "--network=host", image, "sleep", "infinity")
    assert started.returncode == 0, started.stderr
    container = started.stdout.strip()
    try:
        checkout = checkout_copy(tmp_path_factory.mktemp("quick-start") / "dbt-automation-demo")
        for name in copies:
            copied = docker("cp", f"{checkout}/.", f"{container}:{HOME}/{name}")
            assert copied.returncode == 0, copied.stderr
        yield container
    finally:
        subprocess.run([DOCKER, "rm", "--force", container], check=True, capture_output=True)


@pytest.fixture(scope="module")
def debian_12(docker_engine, tmp_path_factory) -> Iterator[str]:
    yield from debian(DEBIAN_12, tmp_path_factory, ("on-system-python", "in-a-venv"))


@pytest.fixture(scope="module")
def debian_13(docker_engine, tmp_path_factory) -> Iterator[str]:
    yield from debian(DEBIAN_13, tmp_path_factory, ("on-system-python",))


def bash(container: str, script: str, workdir: str = HOME) -> subprocess.CompletedProcess:
    return docker(
        "exec", "--workdir", workdir, container, "bash", "-euo", "pipefail", "-c", script,
        timeout=1200,
    )  # fmt: skip


def python_version(container: str, python: str = "python3", workdir: str = HOME) -> str:
    """`python`'s version in the container, as `3.13`."""
    script = f"{python} -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'"
    return bash(container, script, workdir=workdir).stdout.strip()


@pytest.mark.parametrize("image", ["debian_12", "debian_13"])
def test_debians_python_refuses_pip_outside_a_venv(image, request):
    container = request.getfixturevalue(image)
    refused = bash(container, 'python3 -m pip install "nox==2026.10.20"')
    assert refused.returncode != 0
    assert "error: externally-managed-environment" in refused.stderr
    marker = bash(container, "python3 -c 'import sysconfig; print(sysconfig.get_path(\"stdlib\"))'")
    assert bash(container, f"test -f {marker.stdout.strip()}/EXTERNALLY-MANAGED").returncode == 0


def test_the_quick_start_runs_on_debian_12s_system_python(debian_12):
    assert python_version(debian_12) == "3.11"
    ran = bash(debian_12, QUICK_START_THEN_CHECK, workdir=f"{HOME}/on-system-python")
    assert ran.returncode == 0, ran.stdout[-5000:] + ran.stderr[-5000:]
    assert f"{HOME}/on-system-python/.tools/bin/nox" in ran.stdout.splitlines()  # command -v
    assert "All definitions loaded successfully." in ran.stdout + ran.stderr


def test_the_quick_start_runs_inside_a_plain_venv(debian_12):
    in_a_venv = f"python3 -m venv {HOME}/plain && . {HOME}/plain/bin/activate\n"
    ran = bash(debian_12, in_a_venv + QUICK_START_THEN_CHECK, workdir=f"{HOME}/in-a-venv")
    assert ran.returncode == 0, ran.stdout[-5000:] + ran.stderr[-5000:]
    assert f"{HOME}/in-a-venv/.tools/bin/nox" in ran.stdout.splitlines()
    assert "All definitions loaded successfully." in ran.stdout + ran.stderr


def test_the_quick_start_and_a_subset_of_the_tests_run_on_debian_13s_python_3_13(debian_13):
    assert python_version(debian_13) == "3.13"
    workdir = f"{HOME}/on-system-python"
    ran = bash(debian_13, QUICK_START_THEN_CHECK, workdir=workdir)
    assert ran.returncode == 0, ran.stdout[-5000:] + ran.stderr[-5000:]
    assert "All definitions loaded successfully." in ran.stdout + ran.stderr
    assert python_version(debian_13, ".nox/check/bin/python", workdir) == "3.13"

    tested = bash(
        debian_13,
        'export PATH="$PWD/.tools/bin:$PATH"\nnox -s tests -- -m every_python',
        workdir=workdir,
    )
    assert tested.returncode == 0, tested.stdout[-5000:] + tested.stderr[-5000:]
    assert python_version(debian_13, ".nox/tests/bin/python", workdir) == "3.13"
    # Both storages of the scenario, and the lineage log's two tests.
    assert "4 passed" in tested.stdout, tested.stdout[-3000:]
