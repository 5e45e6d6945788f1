"""Docker for the container tests: the engine's client, the base images, a clean checkout."""

import shutil
import subprocess
from pathlib import Path

from harness import REPO_ROOT

HERE = Path(__file__).parent
DOCKER = shutil.which("docker", path="/usr/bin") or "docker"  # Debian's client, as its engine


def docker(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, **kwargs)


def base_images(*images: str) -> None:
    """Each image pulled, or a stand-in built and tagged with its name (`base_images.sh`)."""
    subprocess.run([HERE / "base_images.sh", *images], check=True)


def checkout_copy(destination: Path) -> Path:
    """The committed files as a fresh clone has them (no venv, no state, no DuckDB file)."""
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, tracked):
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, destination / name)
    return destination
