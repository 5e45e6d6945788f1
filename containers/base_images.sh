#!/usr/bin/env bash
# Makes each IMAGE given available to the local Docker engine: pulled from its registry, or,
# where no registry serves it (as on the machine this project is built on), a stand-in built
# from Debian bookworm's own packages and tagged with the image's name.
#
# The stand-in has Python 3.11 with pip and venv, git, sudo, curl, procps and the host's CA
# bundle (SSL_CERT_FILE), so that pip and uv inside reach the registries the host reaches. As in
# the devcontainers image, pip may install into the system Python (Debian marks it externally
# managed, PEP 668). For uv's image (ghcr.io/astral-sh/uv:<version>-...), it also has uv at that
# version, installed by pip inside it.
#
# Usage: containers/base_images.sh IMAGE...   (needs a running Docker engine, and mmdebstrap
# for the stand-ins)
set -euo pipefail
ca_bundle=/etc/ssl/certs/ca-certificates.crt
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

stand_in() {
  if ! docker image inspect dbt-automation-demo/bookworm-stand-in >/dev/null 2>&1; then
    mmdebstrap --quiet --variant=minbase \
      --include=python3,python3-pip,python3-venv,git,sudo,ca-certificates,curl,procps \
      --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
      --customize-hook='ln -sf python3 "$1"/usr/bin/python' \
      --customize-hook="cp $ca_bundle \"\$1\"$ca_bundle" \
      bookworm "$work/rootfs.tar"
    docker import --change 'CMD ["sleep", "infinity"]' --change "ENV SSL_CERT_FILE=$ca_bundle" \
      "$work/rootfs.tar" dbt-automation-demo/bookworm-stand-in >/dev/null
  fi
  echo dbt-automation-demo/bookworm-stand-in
}

for image in "$@"; do
  if docker image inspect "$image" >/dev/null 2>&1 || docker pull --quiet "$image" 2>/dev/null; then
    continue
  fi
  echo "$image: not served here; building a stand-in from Debian bookworm's packages" >&2
  base="$(stand_in)"
  if [[ "$image" =~ ^ghcr\.io/astral-sh/uv:([0-9.]+)- ]]; then
    printf 'FROM %s\nRUN python3 -m pip install --no-cache-dir "uv==%s"\n' "$base" "${BASH_REMATCH[1]}" |
      docker build --quiet --network=host -t "$image" - >/dev/null
  else
    docker tag "$base" "$image"
  fi
done
