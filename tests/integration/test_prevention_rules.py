# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One rule, one place: the prevention cron jobs and the modules decide alike.

The weekly cleanup job (role watermark_cleanup) and the daily health check (role
watermark_health_check) are installed into a temporary directory by the roles themselves
(their preflight and install tasks, with ansible-playbook), then run as cron runs them, on one
copy of a watermark table; the modules run on a second, identical copy:

- cleanup job  vs  watermark_cleanup keep=N: the same rows remain, the same audit rows are
  written (module, table, before/after, rows affected; ids and times aside), and the backup
  holds the same rows (a table or a CSV file, as the role's settings say) — through libpq and
  through ``docker exec`` (a stand-in for the docker CLI that runs the command here);
- health check  vs  watermark_info: the check exits 1 exactly when watermark_info has findings,
  reports exactly those findings, and its metrics count the same regressions and bursts.

The data has what the two implementations used to disagree on: entries with a NULL
``created_at`` (the scheduler's ``ORDER BY created_at DESC`` reads them first), entries sharing
one ``created_at``, regressions of the pair (within one timestamp too), a duplicate burst, a
stale table, a table listed but missing, and a hostile source table name.
"""
import csv
import datetime
import glob
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
import yaml

from tests.integration.conftest import WatermarkDB
from tests.support.ansible_module import run_playbook

KEEP = 5
HOSTILE = 'bronze"; DROP TABLE x; --'
NULLS = "silver_nulls"
TIES = "bronze_trades_kraken"
FRESH = "bronze_trades_binance"
REGRESS = "silver_regress"
BURST = "gold_burst"
STALE = "stale_table"
MISSING = "missing_table"
# watermark_info with the health check's settings (role defaults): stale above 3600 s, no separate
# warning threshold, a 24 h window, cycles of 900 s, bursts above 10 entries an hour.
INFO_ARGS = dict(stale_after=3600, warn_after=3600, cycle_seconds=900, lookback="24h", burst_threshold=10,
                 health=False, count_entries=False, recent_changes="")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the roles install root-owned files (run as root)")


def _server_now(db):
    return db.sql("SELECT date_trunc('second', LOCALTIMESTAMP)")[0][0]


def seed(db, now, healthy_only=False):
    """The same rows, with the same ids and created_at values, on every copy it is given."""
    def at(minutes_ago):
        return now - datetime.timedelta(minutes=minutes_ago)

    def pair(n):
        return datetime.datetime(2026, 2, 12) + datetime.timedelta(minutes=15 * n), 100 * n

    rows = []
    # fresh and increasing: nothing to report
    rows += [(FRESH,) + pair(n) + (at(5 + 15 * (11 - n)),) for n in range(12)]
    if not healthy_only:
        # the newest six written in one transaction: one created_at, id decides
        rows += [(TIES,) + pair(n) + (at(10 + 15 * (7 - n)),) for n in range(2)]
        rows += [(TIES,) + pair(n) + (at(10),) for n in range(2, 8)]
        # two entries without created_at, written last: the scheduler reads them first
        rows += [(NULLS,) + pair(n) + (at(20 + 15 * (7 - n)),) for n in range(8)]
        rows += [(NULLS,) + pair(n) + (None,) for n in (8, 9)]
        # a regression of the pair, then one within one timestamp (same max_timestamp, lower sequence)
        reg = [pair(n) for n in range(10)]
        reg[5] = pair(2)
        reg[6] = (reg[5][0], reg[5][1] - 1)
        rows += [(REGRESS,) + reg[n] + (at(3 + 15 * (9 - n)),) for n in range(10)]
        # a duplicate burst: 15 entries in 40 minutes
        rows += [(BURST,) + pair(n) + (at(40 - 40 * n / 14.0),) for n in range(15)]
        # the newest entry two hours old
        rows += [(STALE,) + pair(n) + (at(120 + 15 * (5 - n)),) for n in range(6)]
        # a hostile name, its two newest entries sharing created_at
        rows += [(HOSTILE,) + pair(n) + (at(7 + 15 * max(0, 7 - n)),) for n in range(9)]
    for db_ in db:
        for r in rows:
            db_.sql("INSERT INTO %s (table_name, max_timestamp, sequence_number, created_at)"
                    " VALUES (%%s, %%s, %%s, %%s)" % db_.table, r)


# -- installing the jobs as the roles do --------------------------------------------------------

DOCKER_STAND_IN = textwrap.dedent("""\
    #!/usr/bin/env bash
    # docker exec [-i] [-e NAME]... CONTAINER CMD...: runs CMD here, as the container would.
    set -euo pipefail
    printf '%s\\n' "$*" >> "$(dirname "$0")/docker-argv.log"
    [ "$1" = exec ] || exit 125
    shift
    while [ $# -gt 0 ]; do
      case "$1" in -i) shift ;; -e) shift 2 ;; -*) exit 125 ;; *) break ;; esac
    done
    [ "$1" = k2-test-db ] || { echo "Error response from daemon: No such container: $1" >&2; exit 1; }
    shift
    exec "$@"
    """)


def install(role, db, tmp_path, **settings):
    """Apply the role's preflight and install tasks (not its cron entry) with every path in
    tmp_path; returns (script, settings file, log file)."""
    d = tmp_path / role
    d.mkdir()
    short = role.replace("watermark_", "").replace("_", "-")
    server = db.server
    extra = {
        "k2_watermark_access": "libpq",
        "k2_watermark_db_host": server.host, "k2_watermark_db_port": server.port,
        "k2_watermark_db_name": server.dbname, "k2_watermark_db_user": server.user,
        "k2_watermark_db_password": server.password, "k2_watermark_table": db.table,
        role + "_python": sys.executable,
        role + "_script_path": str(d / ("k2-watermark-" + short)),
        role + "_config_path": str(d / ("k2-watermark-%s.conf" % short)),
        role + "_lock_file": str(d / "job.lock"),
        role + "_log_file": str(d / "job.log"),
        role + "_lib_dir": str(d / "k2-lib"),
    }
    extra.update(settings)
    playbook = d / "install.yml"
    playbook.write_text(textwrap.dedent("""\
        - hosts: localhost
          connection: local
          gather_facts: false
          tasks:
            - ansible.builtin.include_role:
                name: k2.iceberg_offload.%(role)s
                tasks_from: preflight
            - ansible.builtin.include_role:
                name: k2.iceberg_offload.%(role)s
                tasks_from: install
        """ % {"role": role}))
    rc, dummy, out = run_playbook(str(playbook), extra_vars=extra)
    assert rc == 0, out[-4000:]
    return extra[role + "_script_path"], extra[role + "_config_path"], extra[role + "_log_file"]


def run_job(script, config, timeout=300):
    env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8"}  # as little as cron gives
    proc = subprocess.run(["bash", script, config], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env=env, timeout=timeout, check=False)
    return proc.returncode, proc.stdout.decode(errors="replace")


def log_messages(log_file):
    """The job's log lines without their 'time tag[pid]: ' prefix."""
    if not os.path.exists(log_file):
        return []
    with open(log_file) as fh:
        return [re.sub(r"^\S+ \S+\[\d+\]: ", "", line.rstrip("\n")) for line in fh]


# -- comparing ---------------------------------------------------------------------------------

def table_rows(db):
    return db.sql("SELECT id, table_name, max_timestamp, sequence_number, created_at FROM %s ORDER BY id" % db.table)


def audit_rows(db):
    out = []
    for module, table_name, parameters, before, after, rows, backup, db_user, host in db.audit():
        out.append({"module": module, "table_name": table_name, "before": before, "after": after,
                    "rows_affected": rows, "db_user": db_user, "client_host": host,
                    "keep": parameters.get("keep"), "backup_kind": parameters.get("backup", "table"),
                    "backup": backup})
    return sorted(out, key=lambda a: a["table_name"])


def backup_rows(db, where):
    """The rows a cleanup saved: a backup table (schema.name) or a CSV file."""
    if where.startswith("/"):
        with open(where, newline="") as fh:
            return [tuple(r) for r in csv.reader(fh)]
    return [tuple("" if v is None else str(v) for v in r)
            for r in db.sql("SELECT id, table_name, max_timestamp, sequence_number, created_at FROM %s ORDER BY id"
                            % where)]


def normalised_backup(where, db):
    """A backup's place without what differs between two runs (schema, time of the run)."""
    if where is None:
        return None
    if where.startswith("/"):
        return re.sub(r"_\d{8}_\d{6}(_\d+)?\.csv$", "_<time>.csv", os.path.basename(where))
    return re.sub(r"_\d{8}_\d{6}(_\d+)?$", "_<time>", where.replace(db.schema + ".", "<schema>."))


@pytest.fixture
def copies(pg_server):
    """Two identical watermark tables (each in a schema of its own): one for the job, one for the module."""
    dbs = [WatermarkDB(pg_server), WatermarkDB(pg_server)]
    try:
        for db in dbs:
            db.create_table()
        yield dbs
    finally:
        for db in dbs:
            db.drop()


CLEANUP_CASES = [("table", "libpq"), ("file", "libpq"), ("table", "docker")]


@pytest.mark.parametrize("backup,access", CLEANUP_CASES, ids=["%s-%s" % c for c in CLEANUP_CASES])
def test_cleanup_job_and_module_keep_audit_and_back_up_the_same(copies, tmp_path, backup, access):
    job_db, module_db = copies
    seed(copies, _server_now(job_db))
    before = table_rows(job_db)
    assert before == table_rows(module_db)

    settings = {"watermark_cleanup_keep": KEEP, "watermark_cleanup_backup": backup,
                "watermark_cleanup_backup_dir": str(tmp_path / "job-backups"),
                "watermark_cleanup_audit_table": job_db.audit_table}
    if access == "docker":
        shim = tmp_path / "docker"
        shim.write_text(DOCKER_STAND_IN)
        shim.chmod(0o755)
        settings.update(watermark_cleanup_access="docker", watermark_cleanup_docker_command=str(shim),
                        watermark_cleanup_docker_container="k2-test-db")
    script, config, log_file = install("watermark_cleanup", job_db, tmp_path, **settings)
    rc, output = run_job(script, config)
    assert rc == 0, output + "\n".join(log_messages(log_file))

    os.makedirs(str(tmp_path / "module-backups"))
    r = module_db.run("watermark_cleanup", keep=KEEP, backup=backup, backup_dir=str(tmp_path / "module-backups"))
    assert not r["failed"] and r["changed"], r

    # the same rows remain ...
    remaining = table_rows(job_db)
    assert remaining == table_rows(module_db)
    # ... and they are what keep=N means (docs/watermark_modules.md, "Definitions")
    by_table = {}
    for row in remaining:
        by_table.setdefault(row[1], []).append(row)
    assert sorted(by_table) == sorted({r[1] for r in before})
    assert all(len(rows) == min(KEEP, len([b for b in before if b[1] == t])) for t, rows in by_table.items())
    assert [r[4] for r in by_table[NULLS]].count(None) == 2, "entries without created_at are the newest"
    ties = [r for r in before if r[1] == TIES]
    assert [r[0] for r in by_table[TIES]] == [r[0] for r in ties[-KEEP:]], "ties on created_at are cut by id"
    for name in by_table:
        latest = max((b for b in before if b[1] == name),
                     key=lambda b: (b[4] is None, b[4] or datetime.datetime.min, b[0]))
        assert latest in by_table[name], "the latest entry of %r was deleted" % name

    # the same audit rows
    job_audit, module_audit = audit_rows(job_db), audit_rows(module_db)
    assert job_audit, "the cleanup job wrote no audit row"
    for rows, db in ((job_audit, job_db), (module_audit, module_db)):
        for a in rows:
            a["backup"] = normalised_backup(a["backup"], db)
    assert job_audit == module_audit

    # the same backup
    job_backups = {a["backup"] for a in db_audit_raw(job_db)}
    module_backups = {a["backup"] for a in db_audit_raw(module_db)}
    assert len(job_backups) == len(module_backups) == 1, (job_backups, module_backups)
    assert r["backup"] in module_backups
    job_saved = backup_rows(job_db, job_backups.pop())
    assert job_saved == backup_rows(module_db, module_backups.pop())
    assert len(job_saved) - (1 if backup == "file" else 0) == r["deleted"]

    if access == "docker":
        with open(str(tmp_path / "docker-argv.log")) as fh:
            argv = fh.read()
        assert argv.startswith("exec -i k2-test-db ")
        assert job_db.server.password not in argv

    # a second run deletes nothing and writes nothing, as the module's second run
    rc, output = run_job(script, config)
    assert rc == 0, output
    assert table_rows(job_db) == remaining and len(db_audit_raw(job_db)) == len(job_audit)
    assert any("deleted 0 entries" in m for m in log_messages(log_file))


def db_audit_raw(db):
    return [{"backup": row[6]} for row in db.audit()]


def metric(text, name, table=None):
    label = "" if table is None else '{table="%s"}' % table.replace("\\", "\\\\").replace('"', '\\"')
    for line in text.splitlines():
        if line.startswith(name + label + " "):
            return float(line.split()[-1])
    raise AssertionError("no %s%s in\n%s" % (name, label, text))


@pytest.mark.parametrize("healthy_only", [False, True], ids=["findings", "healthy"])
def test_health_check_verdict_is_watermark_info_findings(copies, tmp_path, healthy_only):
    job_db, module_db = copies
    seed(copies, _server_now(job_db), healthy_only=healthy_only)
    listed = [] if healthy_only else [FRESH, MISSING]
    metrics_file = tmp_path / "k2_watermark_health.prom"
    script, config, log_file = install(
        "watermark_health_check", job_db, tmp_path, watermark_health_check_tables=listed,
        watermark_health_check_metrics_file=str(metrics_file), watermark_health_check_mail_when="never")
    rc, output = run_job(script, config)
    messages = log_messages(log_file)

    names = sorted({r[1] for r in table_rows(module_db)} | set(listed))
    info = module_db.run("watermark_info", tables=names, **INFO_ARGS)
    assert not info["failed"], info

    def normalised(findings):
        return sorted(re.sub(r"\d+ s ago", "<n> s ago", f) for f in findings)

    assert rc == (1 if info["findings"] else 0), (rc, output, messages, info["findings"])
    reported = [m[len("UNHEALTHY: "):] for m in messages if m.startswith("UNHEALTHY: ")
                and not m.startswith("UNHEALTHY: worst age")]
    assert normalised(reported) == normalised(info["findings"]), messages
    if not healthy_only:
        kinds = " ".join(info["findings"])
        for word in ("regression", "duplicate burst", STALE, MISSING, NULLS):
            assert word in kinds, (word, info["findings"])

    text = metrics_file.read_text()
    by_name = {t["table_name"]: t for t in info["tables"]}
    assert metric(text, "k2_watermark_health_check_healthy") == (0 if info["findings"] else 1)
    assert metric(text, "k2_watermark_health_check_regressions") == \
        sum(t.get("regression_count", 0) for t in info["tables"])
    for name, t in by_name.items():
        if t.get("latest") is None:
            continue
        assert metric(text, "k2_watermark_health_check_table_regressions", name) == t["regression_count"], name
        if t["age_seconds"] is not None:
            assert abs(metric(text, "k2_watermark_health_check_table_age_seconds", name) - t["age_seconds"]) < 60
    if shutil.which("promtool"):
        check = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, check=False)
        assert check.returncode == 0, check.stdout.decode() + text


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# module level: "from ...module_utils.<name> import ..." at the start of a line
UTILS_IMPORT = re.compile(r"^from ansible_collections\.k2\.iceberg_offload\.plugins\.module_utils\.(\w+) import", re.M)
# the entry point's one import (inside a function): "from ...module_utils import (a, b, c)"
ENTRY_IMPORT = re.compile(r"from ansible_collections\.k2\.iceberg_offload\.plugins\.module_utils import \((?:  #.*)?"
                          r"\n([^)]*)\)")


def _read(path):
    with open(path) as fh:
        return fh.read()


def job_module_utils():
    """What the entry point imports, and what those import at module level, transitively."""
    entry = _read(os.path.join(REPO, "roles", "watermark_common", "files", "k2_watermark_job.py"))
    todo = {n.strip() for n in ENTRY_IMPORT.search(entry).group(1).split(",") if n.strip()}
    seen = set()
    while todo:
        name = todo.pop()
        seen.add(name)
        todo |= set(UTILS_IMPORT.findall(_read(os.path.join(REPO, "plugins", "module_utils", name + ".py")))) - seen
    return sorted(seen)


@pytest.mark.parametrize("role", ["watermark_cleanup", "watermark_health_check"])
def test_the_roles_install_every_module_utils_the_job_imports(role):
    with open(os.path.join(REPO, "roles", role, "vars", "main.yml")) as fh:
        listed = yaml.safe_load(fh)[role + "_job_module_utils"]
    assert sorted(listed) == job_module_utils()


def test_the_job_library_is_the_collections_code(copies, tmp_path):
    """What the role installs beside the script is the collection's module_utils, byte for byte."""
    install("watermark_cleanup", copies[0], tmp_path)
    lib = tmp_path / "watermark_cleanup" / "k2-lib"
    utils = lib / "ansible_collections" / "k2" / "iceberg_offload" / "plugins" / "module_utils"
    installed = sorted(os.path.basename(p)[:-3] for p in glob.glob(str(utils / "*.py")))
    assert installed == job_module_utils()
    for name in installed:
        with open(os.path.join(REPO, "plugins", "module_utils", name + ".py"), "rb") as a, \
                open(str(utils / (name + ".py")), "rb") as b:
            assert a.read() == b.read(), name
    with open(os.path.join(REPO, "roles", "watermark_common", "files", "k2_watermark_job.py"), "rb") as a, \
            open(str(lib / "k2_watermark_job.py"), "rb") as b:
        assert a.read() == b.read()


@pytest.mark.parametrize("max_regressions", [0, 2, 1])
def test_health_check_tolerates_regressions_by_kind(copies, tmp_path, max_regressions):
    """max_regressions tolerates watermark_info's findings of kind "regression" (and no other kind), as
    long as the window holds no more than that many regressions in all."""
    job_db = copies[0]
    now = _server_now(job_db)
    seed([job_db], now, healthy_only=True)
    ins = "INSERT INTO %s (table_name, max_timestamp, sequence_number, created_at) VALUES (%%s, %%s, %%s, %%s)"
    # one table, two regressions: pairs 1..5, then 3, then 2, then 6 (all within the last two hours)
    for i, n in enumerate([1, 2, 3, 4, 5, 3, 2, 6]):
        job_db.sql(ins % job_db.table, (REGRESS, datetime.datetime(2026, 2, 12, n), n,
                                        now - datetime.timedelta(minutes=5 + 15 * (7 - i))))
    info = job_db.run("watermark_info", tables=[FRESH, REGRESS], **INFO_ARGS)
    assert [f["kind"] for f in info["finding_kinds"]] == ["regression"], info["findings"]
    assert info["tables"][1]["regression_count"] == 2, info["tables"]
    script, config, log_file = install("watermark_health_check", job_db, tmp_path,
                                       watermark_health_check_max_regressions=max_regressions,
                                       watermark_health_check_mail_when="never",
                                       watermark_health_check_metrics_file=str(tmp_path / "h.prom"))
    rc, output = run_job(script, config)
    messages = log_messages(log_file)
    tolerated = [m for m in messages if m.startswith("tolerated: ")]
    if max_regressions >= 2:
        assert rc == 0, (output, messages)
        assert len(tolerated) == 1 and REGRESS in tolerated[0], messages
    else:
        assert rc == 1, (output, messages)
        assert not tolerated and any(m.startswith("UNHEALTHY: %s: 2 regression(s)" % REGRESS) for m in messages), \
            messages
