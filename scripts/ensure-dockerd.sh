#!/usr/bin/env bash
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Start a Docker Engine when none answers (CI machines and fresh hosts have the
# docker.io package but no running daemon). Leaves an already running one alone.
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
command -v dockerd >/dev/null || { echo "dockerd is not installed (scripts/setup.sh installs docker.io)" >&2; exit 1; }
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "[setup] starting dockerd (log: /var/log/k2-dockerd.log)" >&2
$SUDO bash -c 'nohup dockerd >/var/log/k2-dockerd.log 2>&1 & echo $! > /var/run/k2-dockerd.pid'
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "dockerd did not come up; see /var/log/k2-dockerd.log" >&2
tail -20 /var/log/k2-dockerd.log >&2 || true
exit 1
