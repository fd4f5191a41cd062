#!/bin/bash
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# k2-prefect-db: PostgreSQL 15 with database and user "prefect" and the
# (local socket connections are trusted, as in the runbook's docker exec psql),
# offload_watermarks table. Settings come from the environment:
#   POSTGRES_PASSWORD (required), POSTGRES_MAX_CONNECTIONS (default 40).
set -euo pipefail
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
BIN=/usr/lib/postgresql/15/bin
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  install -d -o postgres -g postgres -m 700 "$PGDATA"
  pwfile=$(mktemp); chown postgres "$pwfile"; printf '%s' "$POSTGRES_PASSWORD" > "$pwfile"
  su postgres -c "$BIN/initdb -D $PGDATA -U postgres --auth-local=trust --auth-host=scram-sha-256 --pwfile=$pwfile -E UTF8 --locale=C.UTF-8" >/dev/null
  rm -f "$pwfile"
  cat >> "$PGDATA/postgresql.conf" <<CONF
listen_addresses = '*'
max_connections = ${POSTGRES_MAX_CONNECTIONS:-40}
superuser_reserved_connections = 3
timezone = 'UTC'
log_timezone = 'UTC'
log_min_messages = warning
log_connections = off
# A client that vanished behind a network partition (Scenario 2c) must not keep its session, and the
# locks of its open transaction, for the kernel's default two hours: probe idle peers after 10 s.
tcp_keepalives_idle = 10
tcp_keepalives_interval = 5
tcp_keepalives_count = 3
CONF
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
  su postgres -c "$BIN/pg_ctl -D $PGDATA -o '-c listen_addresses=' -w start" >/dev/null
  su postgres -c "psql -q -v ON_ERROR_STOP=1" <<SQL
CREATE ROLE prefect LOGIN PASSWORD '${POSTGRES_PASSWORD//\'/\'\'}';
CREATE DATABASE prefect OWNER prefect;
SQL
  su postgres -c "psql -q -v ON_ERROR_STOP=1 -d prefect" <<'SQL'
SET ROLE prefect;
\i /usr/local/share/k2/init.sql
SQL
  su postgres -c "$BIN/pg_ctl -D $PGDATA -m fast -w stop" >/dev/null
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups "$BIN/postgres" -D "$PGDATA"
