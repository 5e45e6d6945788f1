"""The suite's time profile (docs/ci-time.md): `--time-profile` records each test's wall time
and CPU, and the table splits them into CPU and waiting."""

import json
import os
import subprocess
import sys
from pathlib import Path

from harness import REPO_ROOT
from time_profile import table

SLEEPER = """
import subprocess, sys, time

def test_sleeps_a_second_beside_a_child_that_computes():
    subprocess.run([sys.executable, "-c", "sum(range(4 * 10**7))"], check=True)
    time.sleep(1)
"""

# A server that outlives its test, as the preloaded dbt does: it runs what the test asks in a
# process of its own, which it reaps, and is stopped at the end of the session.
SERVED = """
import subprocess, sys, pytest

SERVER = (
    "import subprocess, sys\\n"
    "for line in sys.stdin:\\n"
    "    subprocess.run([sys.executable, '-c', 'sum(range(4 * 10**7))'])\\n"
    "    print('done', flush=True)\\n"
)

@pytest.fixture(scope="session")
def server():
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    yield process
    process.stdin.close()
    process.wait()

def test_asks_the_server_to_compute(server):
    server.stdin.write("go\\n")
    server.stdin.flush()
    assert server.stdout.readline() == "done\\n"

def test_stops_the_server_at_the_end(server):
    pass
"""


def profile_of(tmp_path, module: str, source: str) -> tuple[list[dict], Path]:
    """Each phase of the module's tests, as `--time-profile` records them, and the file."""
    (tmp_path / f"{module}.py").write_text(source)
    profile = tmp_path / f"{module}.json"
    profiled = subprocess.run(
        [sys.executable, "-m", "pytest", f"{module}.py", "-p", "time_profile",
         "-p", "no:cacheprovider", "-q", f"--time-profile={profile}"],
        cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "tests")},
    )  # fmt: skip
    assert profiled.returncode == 0, profiled.stdout + profiled.stderr
    return json.loads(profile.read_text())["phases"], profile


def test_the_profile_splits_each_test_into_cpu_and_waiting(tmp_path):
    phases, profile = profile_of(tmp_path, "test_sleeper", SLEEPER)
    test = "test_sleeper.py::test_sleeps_a_second_beside_a_child_that_computes"
    assert [(phase["test"], phase["phase"]) for phase in phases] == [
        (test, "setup"), (test, "call"), (test, "teardown"),
    ]  # fmt: skip
    (call,) = [phase for phase in phases if phase["phase"] == "call"]
    # The child's CPU is counted (about 0.4 s here: 0.1 s was its whole sum of 10**7, and fell
    # just short on a fast core); the second of sleep is not.
    assert call["wall"] >= 1.0, phases
    assert 0.1 < call["cpu"] < call["wall"] - 0.9, phases

    shown = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "time_profile.py"), str(profile)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert shown == table(json.loads(profile.read_text())) + "\n"
    (row,) = [line for line in shown.splitlines() if line.startswith("| `test_sleeper.py` |")]
    wall, cpu = sum(phase["wall"] for phase in phases), sum(phase["cpu"] for phase in phases)
    assert row == f"| `test_sleeper.py` | 1 | {wall:.0f} | {cpu:.0f} | {wall - cpu:.0f} |"


def test_what_a_lasting_server_computes_for_a_test_counts_in_that_test(tmp_path):
    phases, _ = profile_of(tmp_path, "test_served", SERVED)
    cpu = {(phase["test"].split("::")[1], phase["phase"]): phase["cpu"] for phase in phases}
    # The server's process for the test (about 0.4 s) counts where it ran, once: not in the
    # teardown that stops the server and reaps it with what it had reaped.
    assert cpu[("test_asks_the_server_to_compute", "call")] > 0.1, phases
    assert cpu[("test_stops_the_server_at_the_end", "teardown")] < 0.1, phases
