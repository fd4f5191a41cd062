#!/usr/bin/env bash
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# One-time (and idempotent) set-up for tests, the lab, the demo and benchmarks:
#   - Debian packages the tests need (servers and tools), installed only when missing;
#   - a running Docker Engine (dockerd is started when none answers);
#   - a virtualenv with requirements-dev.txt (re-made when that file changes);
#   - a collections path in which ansible_collections/k2/iceberg_offload is this checkout;
#   - a local stand-in for the get-pip script ansible-test would download.
# Environment: K2_VENV (default .venv), K2_SKIP_APT=1 to skip the Debian step,
# K2_SKIP_DOCKER=1 not to start dockerd.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${K2_VENV:-$ROOT/.venv}

# chromium: tests/lab/test_incident_html.py opens the HTML incident report headless and takes a screenshot.
DEB_PACKAGES=(docker.io debootstrap postgresql clickhouse-server clickhouse-client prometheus prometheus-alertmanager openjdk-17-jre-headless cron gzip util-linux jq chromium)

say() { printf '[setup] %s\n' "$*" >&2; }

if [ "${K2_SKIP_APT:-0}" != 1 ]; then
  missing=()
  for p in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    say "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    # policy-rc.d keeps the packages' own services (postgresql, clickhouse,
    # prometheus) from starting: tests start their own servers on their own ports.
    had_policy=0; [ -e /usr/sbin/policy-rc.d ] && had_policy=1
    [ $had_policy = 1 ] || printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ $had_policy = 1 ] || $SUDO rm -f /usr/sbin/policy-rc.d
  fi
fi

if [ "${K2_SKIP_DOCKER:-0}" != 1 ]; then
  scripts/ensure-dockerd.sh
fi

stamp="$VENV/.k2-requirements.sha256"
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "creating virtualenv $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
  "$VENV/bin/pip" install -q -r requirements-dev.txt 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c "import ansible, psycopg2, pyiceberg, pyarrow, pygal, requests, docker, pytest" \
    || { say "virtualenv is incomplete"; exit 1; }
  echo "$want" > "$stamp"
fi

# The checkout as a collection: .collections/ansible_collections/k2/iceberg_offload -> ROOT
mkdir -p .collections/ansible_collections/k2
ln -sfn "$ROOT" .collections/ansible_collections/k2/iceberg_offload

# ansible-test fetches get-pip.py from a host this machine cannot reach. Its cache
# gets a stand-in that installs pip from the PyPI wheel instead.
if [ -x scripts/ansible-test-getpip.sh ]; then
  scripts/ansible-test-getpip.sh "$VENV"
fi
say "ready: venv $VENV, collections path $ROOT/.collections"
