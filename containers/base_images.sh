#!/usr/bin/env bash
# Makes each IMAGE given available to the local Docker engine: pulled from its registry, or,
# where no registry serves it (as on the machine this project is built on), a stand-in built
# from Debian bookworm's own packages and tagged with the image's name. The image
# dbt-automation-demo/trixie-stand-in is the same from Debian trixie's (13) packages (Python
# 3.13), with what the README says `nox -s tests` needs (PostgreSQL's server, Chromium).
#
# The stand-in is Debian 12 as a newcomer has it: Python 3.11 with pip and venv, git, sudo, curl,
# procps, and the host's CA bundle (SSL_CERT_FILE), so that pip and uv inside reach the
# registries the host reaches. PATH is in its configuration, as in Docker's Debian images (the
# devcontainer's remoteEnv extends it). Debian's EXTERNALLY-MANAGED marker is kept: pip refuses
# to install into the system Python (PEP 668), as on Debian 12 or Ubuntu 24.04. For uv's image
# (ghcr.io/astral-sh/uv:<version>-...), it also has uv at that version, from a venv of its own.
# For PostgreSQL's (postgres:<tag>), it has Debian's PostgreSQL server (15) and an entrypoint
# that keeps the official image's contract as far as deploy/compose uses it
# (postgres_stand_in_entrypoint.sh).
#
# Every stand-in carries the label below; an image with an older label is rebuilt, so a machine
# that kept an earlier recipe's image does not test with it.
#
# Usage: containers/base_images.sh IMAGE...   (needs a running Docker engine, and mmdebstrap
# for the stand-ins)
set -euo pipefail
ca_bundle=/etc/ssl/certs/ca-certificates.crt
recipe=4  # raise when the stand-in changes
label=dbt-automation-demo.stand-in-recipe
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The image is here, and was pulled from a registry (it has a digest) or is a stand-in of this
# recipe.
current() {
  local found
  found="$(docker image inspect --format \
    "{{ len .RepoDigests }} {{ index .Config.Labels \"$label\" }}" "$1" 2>/dev/null)" || return 1
  [[ "$found" != "0 "* || "$found" == "0 $recipe" ]]
}

# stand_in SUITE [PACKAGES]: Debian SUITE's stand-in (with PACKAGES, comma-separated), built once.
stand_in() {
  local image="dbt-automation-demo/$1-stand-in"
  if ! current "$image"; then
    mmdebstrap --quiet --variant=minbase \
      --include="python3,python3-pip,python3-venv,git,sudo,ca-certificates,curl,procps${2:+,$2}" \
      --customize-hook='ln -sf python3 "$1"/usr/bin/python' \
      --customize-hook="cp $ca_bundle \"\$1\"$ca_bundle" \
      "$1" "$work/rootfs.tar"
    docker import --change 'CMD ["sleep", "infinity"]' --change "ENV SSL_CERT_FILE=$ca_bundle" \
      --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
      --change "LABEL $label=$recipe" \
      "$work/rootfs.tar" "$image" >/dev/null
    rm "$work/rootfs.tar"
  fi
  echo "$image"
}

for image in "$@"; do
  if [[ "$image" == dbt-automation-demo/trixie-stand-in ]]; then
    stand_in trixie postgresql,chromium >/dev/null
    continue
  fi
  if current "$image" || docker pull --quiet "$image" 2>/dev/null; then
    continue
  fi
  echo "$image: not served here; building a stand-in from Debian bookworm's packages" >&2
  base="$(stand_in bookworm)"
  if [[ "$image" =~ ^postgres: ]]; then
    mkdir -p "$work/postgres"
    cp "$(dirname "$0")/postgres_stand_in_entrypoint.sh" "$work/postgres/entrypoint.sh"
    printf '%s\n' "FROM $base" \
      "RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql >/dev/null" \
      "COPY entrypoint.sh /usr/local/bin/docker-entrypoint.sh" \
      'ENTRYPOINT ["docker-entrypoint.sh"]' 'CMD []' >"$work/postgres/Dockerfile"
    docker build --quiet --network=host -t "$image" "$work/postgres" >/dev/null
  elif [[ "$image" =~ ^ghcr\.io/astral-sh/uv:([0-9.]+)- ]]; then
    printf 'FROM %s\nRUN python3 -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir "uv==%s" \\\n  && ln -s /opt/uv/bin/uv /usr/local/bin/uv\n' \
      "$base" "${BASH_REMATCH[1]}" |
      docker build --quiet --network=host -t "$image" - >/dev/null
  else
    docker tag "$base" "$image"
  fi
done
