#!/bin/bash
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# k2-clickhouse: ClickHouse with bronze_trades_* tables, 48 h of seeded history,
# then a trade generator feeding every table a few rows per second.
# Environment: K2_TABLES (space separated), K2_HISTORY_HOURS (48),
# K2_HISTORY_ROWS_PER_SECOND (2), K2_GENERATOR (1 to run it).
set -euo pipefail
TABLES=${K2_TABLES:-"bronze_trades_binance bronze_trades_kraken"}
HOURS=${K2_HISTORY_HOURS:-48}
PER_SECOND=${K2_HISTORY_ROWS_PER_SECOND:-2}

install -d -o clickhouse -g clickhouse /var/lib/clickhouse /var/log/clickhouse-server
setpriv --reuid=clickhouse --regid=clickhouse --init-groups \
  clickhouse-server --config-file=/etc/clickhouse-server/config.xml &
server=$!
trap 'kill -TERM $server 2>/dev/null; [ -n "${gen:-}" ] && kill -TERM $gen 2>/dev/null; wait' TERM INT

for _ in $(seq 1 120); do
  clickhouse-client -q "SELECT 1" >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { echo "clickhouse-server exited" >&2; exit 1; }
  sleep 0.5
done

start=$(( $(date +%s) - HOURS * 3600 ))
price=40000
for t in $TABLES; do
  clickhouse-client -q "$(sed "s/{table}/$t/" /usr/local/share/k2/schema.sql)"
  rows=$(clickhouse-client -q "SELECT count() FROM default.$t")
  if [ "$rows" = 0 ] && [ "$HOURS" -gt 0 ]; then
    clickhouse-client -q "$(sed -e "s/{table}/$t/" -e "s/{start}/$start/" -e "s/{per_second}/$PER_SECOND/" \
      -e "s/{base_price}/$price/" -e "s/{rows}/$((HOURS * 3600 * PER_SECOND))/" /usr/local/share/k2/seed.sql)"
  fi
  price=$((price / 10))
done
echo "k2-clickhouse ready: $TABLES" >&2
touch /tmp/k2-clickhouse-ready

if [ "${K2_GENERATOR:-1}" = 1 ]; then
  python3 /usr/local/bin/k2-trade-generator $TABLES &
  gen=$!
fi
wait -n
echo "a lab process exited; stopping" >&2
kill -TERM $server ${gen:-} 2>/dev/null || true
wait
exit 1
