"""The suite's time profile (docs/ci-time.md): `--time-profile` records each test's wall time
and CPU, and the table splits them into CPU and waiting."""

import json
import os
import subprocess
import sys

from harness import REPO_ROOT
from time_profile import table

SLEEPER = """
import subprocess, sys, time

def test_sleeps_a_second_beside_a_child_that_computes():
    subprocess.run([sys.executable, "-c", "sum(range(4 * 10**7))"], check=True)
    time.sleep(1)
"""


def test_the_profile_splits_each_test_into_cpu_and_waiting(tmp_path):
    (tmp_path / "test_sleeper.py").write_text(SLEEPER)
    profile = tmp_path / "profile.json"
    profiled = subprocess.run(
        [sys.executable, "-m", "pytest", "test_sleeper.py", "-p", "time_profile",
         "-p", "no:cacheprovider", "-q", f"--time-profile={profile}"],
        cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "tests")},
    )  # fmt: skip
    assert profiled.returncode == 0, profiled.stdout + profiled.stderr
    phases = json.loads(profile.read_text())["phases"]
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
