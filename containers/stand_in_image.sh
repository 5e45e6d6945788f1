#!/usr/bin/env bash
# A stand-in for the devcontainer's base image (mcr.microsoft.com/devcontainers/python:
# 1-3.11-bookworm), which no registry here serves: Debian bookworm from Debian's own packages,
# with Python 3.11, pip, venv, git, sudo, curl and procps. As in the real image, pip may install
# into the system Python (Debian marks it externally managed, PEP 668; the real image builds
# its own Python).
# Usage: containers/stand_in_image.sh TAG   (needs mmdebstrap and a running Docker engine)
set -euo pipefail
tag="${1:?usage: $0 TAG}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

mmdebstrap --quiet --variant=minbase \
  --include=python3,python3-pip,python3-venv,git,sudo,ca-certificates,curl,procps \
  --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
  --customize-hook='ln -sf python3 "$1"/usr/bin/python' \
  bookworm "$work/rootfs.tar"
docker import --change 'CMD ["sleep", "infinity"]' "$work/rootfs.tar" "$tag"
