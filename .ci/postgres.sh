#!/usr/bin/env bash
# Installs (Debian's package), starts and prepares a PostgreSQL server on 127.0.0.1 for the
# storage tests, then prints ONE line on stdout:
#
#   export SOCIALPUB_TEST_POSTGRES_URL=postgres://socialpub:...@127.0.0.1:5432/socialpub
#
# so a caller can run `eval "$(bash .ci/postgres.sh)"`. Everything else goes to stderr.
# Idempotent: an installed or running server is reused; the role and database are created only
# when missing. Run as root (CI machines); PostgreSQL itself runs as the `postgres` user.
#
# Settings (environment): SOCIALPUB_PG_USER (default socialpub), SOCIALPUB_PG_PASSWORD
# (default socialpub), SOCIALPUB_PG_DB (default socialpub).
set -euo pipefail

# Keep stdout for the export line only.
exec 3>&1 1>&2

PG_USER="${SOCIALPUB_PG_USER:-socialpub}"
PG_PASSWORD="${SOCIALPUB_PG_PASSWORD:-socialpub}"
PG_DB="${SOCIALPUB_PG_DB:-socialpub}"

log() { echo "postgres.sh: $*"; }

case "$PG_USER$PG_DB" in
  *[!a-zA-Z0-9_]*) log "SOCIALPUB_PG_USER and SOCIALPUB_PG_DB must be [a-zA-Z0-9_]"; exit 2 ;;
esac
case "$PG_PASSWORD" in
  *[!a-zA-Z0-9_.-]*) log "SOCIALPUB_PG_PASSWORD must be [a-zA-Z0-9_.-] (it goes into a URL)"; exit 2 ;;
esac

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

if ! command -v pg_lsclusters >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  log "installing PostgreSQL from the Debian archive"
  as_root apt-get update -q
  # policy-rc.d-less containers may fail to start the service during install; we start it below.
  # The package's postinst may start a server too: it must not inherit fd 3 either.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    postgresql postgresql-client 3>&- </dev/null
fi

# The newest installed major version.
VERSION="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
if [ -z "$VERSION" ]; then
  log "no PostgreSQL server found under /usr/lib/postgresql"
  exit 1
fi

# Debian creates a `main` cluster on install; make one when it did not (or it was removed).
if ! pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main"' | grep -q .; then
  log "creating cluster $VERSION/main"
  as_root pg_createcluster "$VERSION" main
fi

PORT="$(pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" { print $3 }')"
STATUS="$(pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" { print $4 }')"

if [ "$STATUS" != "online" ]; then
  log "starting cluster $VERSION/main on port $PORT"
  # pg_ctlcluster drops to the cluster owner; PostgreSQL itself refuses to run as root.
  # Close fd 3 (the caller's stdout, often a `$(...)` pipe) for the server: a postmaster that
  # inherits it keeps the pipe open for its whole life and the caller's substitution never ends.
  as_root pg_ctlcluster "$VERSION" main start 3>&- </dev/null
fi

for _ in $(seq 1 60); do
  if pg_isready -q -h 127.0.0.1 -p "$PORT"; then break; fi
  sleep 0.5
done
if ! pg_isready -q -h 127.0.0.1 -p "$PORT"; then
  log "PostgreSQL did not accept connections on 127.0.0.1:$PORT"
  tail -n 30 "/var/log/postgresql/postgresql-$VERSION-main.log" || true
  exit 1
fi

psql_admin() {
  as_root runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PORT" -d postgres "$@"
}

log "ensuring role $PG_USER and database $PG_DB"
psql_admin <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    CREATE ROLE $PG_USER LOGIN;
  END IF;
END
\$\$;
-- CREATEDB: the benchmarks make a fresh database per run.
ALTER ROLE $PG_USER WITH LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
-- pg_checkpoint (PostgreSQL 15 and later): the lag benchmark starts from a checkpoint, so
-- the write-ahead log of earlier benchmarks is not flushed during it.
DO \$\$
BEGIN
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'pg_checkpoint') THEN
    GRANT pg_checkpoint TO $PG_USER;
  END IF;
END
\$\$;
SELECT 'CREATE DATABASE $PG_DB OWNER $PG_USER'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB') \gexec
SQL

URL="postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PORT/$PG_DB"

# Password authentication over TCP on loopback must work (Debian's pg_hba.conf allows
# scram-sha-256 from 127.0.0.1 by default).
if ! PGPASSWORD="$PG_PASSWORD" psql -X -q -h 127.0.0.1 -p "$PORT" -U "$PG_USER" -d "$PG_DB" \
  -c 'SELECT 1' >/dev/null; then
  log "cannot log in as $PG_USER over 127.0.0.1:$PORT; check pg_hba.conf"
  exit 1
fi

log "ready: PostgreSQL $VERSION on 127.0.0.1:$PORT, database $PG_DB"
echo "export SOCIALPUB_TEST_POSTGRES_URL=$URL" >&3
