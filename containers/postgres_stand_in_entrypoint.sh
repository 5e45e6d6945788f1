#!/bin/sh
# The stand-in for the official `postgres` image (containers/base_images.sh): the part of its
# contract deploy/compose uses. On first start, a cluster in PGDATA owned by POSTGRES_USER with
# POSTGRES_PASSWORD (scram-sha-256 over TCP) and the database POSTGRES_DB; then the server, as
# the postgres user, on every address, on PGPORT (5432 unless set), arguments passed on.
set -eu
bin=$(echo /usr/lib/postgresql/*/bin)
export PGDATA="${PGDATA:-/var/lib/postgresql/data}"
mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
as_postgres() { runuser -u postgres -- "$@"; }

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  printf '%s\n' "$POSTGRES_PASSWORD" > /tmp/pwfile && chown postgres /tmp/pwfile
  as_postgres "$bin/initdb" -D "$PGDATA" -U "$POSTGRES_USER" --pwfile=/tmp/pwfile \
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8
  rm /tmp/pwfile
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  as_postgres "$bin/pg_ctl" -D "$PGDATA" -o "-c listen_addresses=''" -w start
  if [ "${POSTGRES_DB:-postgres}" != postgres ]; then
    as_postgres psql -U "$POSTGRES_USER" -d postgres -c "CREATE DATABASE \"$POSTGRES_DB\""
  fi
  as_postgres "$bin/pg_ctl" -D "$PGDATA" -m fast -w stop
fi
exec runuser -u postgres -- "$bin/postgres" -D "$PGDATA" -c listen_addresses='*' "$@"
