# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Secrets never leave the vault (issue 9): every module runs with distinctive secret values, at
-vvvv, through successes and failures, against the real PostgreSQL, ClickHouse and Iceberg
warehouse; then every output, log, audit row, backup table, backup file and server log is
searched for the secrets.

The runs are a list (runs()). A run is one task (a module and its arguments) or a whole playbook
(``PlaybookRun``), with the environment its controller process gets (env fallbacks such as
PGPASSWORD come from there: a task's ``environment:`` keyword is printed by Ansible itself at -vvv,
so it is no place for a secret) and whether it must fail. Module runs with the same environment
are played as one generated playbook; add a recovery playbook to whole_playbooks().
"""
import collections
import datetime
import glob
import json
import os
import subprocess
import sys
import urllib.parse
import uuid

import psycopg2
import pytest
import yaml

from tests.support.ansible_module import ANSIBLE_PLAYBOOK, ansible_env
from tests.support.clickhouse_server import SECRET_PASSWORD, SECRET_USER, create_trades_table, insert_trades
from tests.support.iceberg_warehouse import Warehouse, trades

TOKEN = uuid.uuid4().hex[:10]
# Letters and digits only, so that no quoting or encoding could hide one from the search.
PG_SECRET = "K2pgSecret" + TOKEN
PG_WRONG = "K2pgWrong" + TOKEN
CH_WRONG = "K2chWrong" + TOKEN
URL_WRONG = "K2urlWrong" + TOKEN
ICE_SECRET = "K2iceSecret" + TOKEN
ICE_TOKEN = "K2iceToken" + TOKEN
PROP_SECRET = "K2propSecret" + TOKEN
CATALOG_URL_SECRET = "K2catUrl" + TOKEN
SECRETS = [PG_SECRET, PG_WRONG, CH_WRONG, URL_WRONG, ICE_SECRET, ICE_TOKEN, PROP_SECRET, CATALOG_URL_SECRET,
           SECRET_PASSWORD]

Run = collections.namedtuple("Run", "id module args env fails")
PlaybookRun = collections.namedtuple("PlaybookRun", "id playbook extra_vars env fails")


@pytest.fixture
def world(wdb, pg_server, clickhouse, tmp_path):
    """A role with a secret password owning the test schema, a ClickHouse source table readable by the
    secret ClickHouse user, a cold tier, and a backup directory."""
    if not clickhouse["own_server"]:
        pytest.skip("needs the throwaway ClickHouse server (its users.xml holds the secret user)")
    role = "k2sec_" + wdb.schema[-8:]
    try:
        wdb.sql("CREATE ROLE %s LOGIN PASSWORD '%s'" % (role, PG_SECRET))
    except psycopg2.Error as e:
        pytest.skip("cannot create a role on this server: %s" % e)
    wdb.sql("GRANT ALL ON SCHEMA %s TO %s" % (wdb.schema, role))
    wdb.sql("GRANT pg_signal_backend TO %s" % role)
    name = "sec_%s" % uuid.uuid4().hex[:8]
    url, db = clickhouse["url"], clickhouse["database"]
    create_trades_table(url, db, name, clickhouse["user"], clickhouse["password"])
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None, microsecond=0)
    rows = [(now - datetime.timedelta(hours=30) + datetime.timedelta(minutes=10 * k), k + 1) for k in range(170)]
    insert_trades(url, db, name, [(ts.strftime("%Y-%m-%d %H:%M:%S"), s, "BTCUSDT", "buy", 1.0, 1.0)
                                  for ts, s in rows], clickhouse["user"], clickhouse["password"])
    (tmp_path / "warehouse").mkdir()
    warehouse = Warehouse(str(tmp_path / "warehouse"))
    cold = warehouse.create(name)
    warehouse.offload(cold, trades(1, 50), source_table=name)
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    yield {"wdb": wdb, "role": role, "source": name, "rows": rows, "clickhouse": clickhouse,
           "warehouse": warehouse, "backup_dir": str(backup_dir), "tmp": tmp_path, "pg_server": pg_server}
    wdb.sql("DROP OWNED BY %s" % role)
    wdb.sql("DROP ROLE %s" % role)


def runs(w):
    """Every module, every secret option, successes and failures."""
    s = w["pg_server"]
    ch = w["clickhouse"]
    hostport = ch["url"].split("://", 1)[1]
    pg = {"login_host": s.host, "port": s.port, "login_db": s.dbname, "login_user": w["role"],
          "login_password": PG_SECRET, "watermark_table": w["wdb"].table, "audit_table": w["wdb"].audit_table}
    pg_info = dict((k, v) for k, v in pg.items() if k != "audit_table")
    pg_env_only = dict((k, v) for k, v in pg.items() if k != "login_password")
    chs = {"clickhouse_url": ch["url"], "clickhouse_database": ch["database"], "clickhouse_user": SECRET_USER,
           "clickhouse_password": SECRET_PASSWORD}
    url_creds = {"clickhouse_url": "http://%s:%s@%s/" % (SECRET_USER, urllib.parse.quote(SECRET_PASSWORD), hostport),
                 "clickhouse_database": ch["database"]}
    url_wrong = dict(url_creds, clickhouse_url="http://%s:%s@%s/" % (SECRET_USER, URL_WRONG, hostport))
    ice = {"iceberg_catalog": "default",
           "iceberg_catalog_properties": dict(w["warehouse"].properties, token=PROP_SECRET),
           "iceberg_catalog_secrets": {"credential": "k2:" + ICE_SECRET, "s3.secret-access-key": ICE_TOKEN}}
    ice_bad = dict(ice, iceberg_catalog_properties={
        "type": "sql", "uri": "postgresql+psycopg2://k2cat:%s@127.0.0.1:1/catalog" % CATALOG_URL_SECRET,
        "warehouse": "file://" + str(w["tmp"])})
    src = w["source"]
    last = w["rows"][-1]
    pair = {"strategy": "pair", "max_timestamp": last[0].isoformat(), "sequence_number": last[1]}
    env_secrets = {"PGPASSWORD": PG_SECRET, "CLICKHOUSE_PASSWORD": SECRET_PASSWORD}
    backup_file = {"backup": "file", "backup_dir": w["backup_dir"]}
    return [
        Run("reset-present", "watermark_reset", dict(pg, **chs), {}, False),
        Run("reset-pair-checked", "watermark_reset", dict(pg, tables=[src], **dict(pair, **chs)), {}, False),
        Run("reset-replace-backup-table", "watermark_reset",
            dict(pg, tables=[src], mode="replace", allow_backward=True, **dict(pair, sequence_number=1, **chs)),
            {}, False),
        Run("reset-replace-backup-file", "watermark_reset",
            dict(pg, tables=[src], mode="replace", **dict(pair, **dict(chs, **backup_file))), {}, False),
        Run("reset-url-credentials", "watermark_reset",
            dict(pg, tables=[src], allow_backward=True, **dict(pair, sequence_number=2, **url_creds)), {}, False),
        Run("reset-url-wrong-password", "watermark_reset", dict(pg, tables=[src], **dict(pair, **url_wrong)), {}, True),
        Run("reset-url-and-other-password", "watermark_reset",
            dict(pg, tables=[src], **dict(pair, clickhouse_password=CH_WRONG, **url_creds)), {}, True),
        Run("reset-clickhouse-wrong-password", "watermark_reset",
            dict(pg, tables=[src], **dict(pair, **dict(chs, clickhouse_password=CH_WRONG))), {}, True),
        Run("reset-cold-tier", "watermark_reset",
            dict(pg, tables=[src], strategy="cold_tier", allow_backward=True, **dict(chs, **ice)), {}, False),
        Run("reset-cold-tier-bad-catalog", "watermark_reset",
            dict(pg, tables=[src], strategy="cold_tier", **dict(chs, **ice_bad)), {}, True),
        Run("reset-lookback-before-1970", "watermark_reset",
            dict(pg, tables=[src], strategy="lookback", lookback="25000d", **chs), {}, True),
        Run("reset-pg-wrong-password", "watermark_reset",
            dict(pg, login_password=PG_WRONG, tables=[src], **dict(pair, **chs)), {}, True),
        Run("cleanup-keep-backup-table", "watermark_cleanup", dict(pg, keep=1), {}, False),
        Run("cleanup-backup-file", "watermark_cleanup", dict(pg, older_than="1s", duplicates_only=True,
                                                             **backup_file), {}, False),
        Run("cleanup-regressions", "watermark_cleanup", dict(pg, regressions_only=True), {}, False),
        Run("cleanup-wrong-password", "watermark_cleanup", dict(pg, keep=1, login_password=PG_WRONG), {}, True),
        Run("cleanup-bad-option", "watermark_cleanup", dict(pg, keep=1, lock_timeout=-1), {}, True),
        Run("info", "watermark_info", pg_info, {}, False),
        Run("info-wrong-password", "watermark_info", dict(pg_info, login_password=PG_WRONG), {}, True),
        Run("source-info", "offload_source_info", dict(chs, tables=[src]), {}, False),
        Run("source-info-url-credentials", "offload_source_info", dict(url_creds, tables=[src]), {}, False),
        Run("source-info-url-wrong", "offload_source_info", dict(url_wrong, tables=[src]), {}, True),
        Run("source-info-wrong-password", "offload_source_info",
            dict(chs, tables=[src], clickhouse_password=CH_WRONG), {}, True),
        Run("iceberg-info", "iceberg_table_info", dict(ice, table="cold." + src), {}, False),
        Run("iceberg-info-bad-catalog", "iceberg_table_info", dict(ice_bad, table="cold." + src), {}, True),
        # secrets from the controller's environment (env fallbacks), not from the task
        Run("env-reset", "watermark_reset",
            dict(pg_env_only, tables=[src], allow_backward=True,
                 **dict(pair, sequence_number=3, **dict((k, v) for k, v in chs.items() if k != "clickhouse_password"))),
            env_secrets, False),
        Run("env-cleanup", "watermark_cleanup", dict(pg_env_only, keep=1, **backup_file), env_secrets, False),
        Run("env-info", "watermark_info", dict((k, v) for k, v in pg_info.items() if k != "login_password"),
            env_secrets, False),
        Run("env-source-info-wrong", "offload_source_info",
            dict(tables=[src], clickhouse_url=ch["url"], clickhouse_database=ch["database"],
                 clickhouse_user=SECRET_USER), dict(env_secrets, CLICKHOUSE_PASSWORD=CH_WRONG), True),
    ]


def whole_playbooks(w):
    """Whole playbooks, each played at -vvvv as a user would: PlaybookRun(id, playbook path, extra_vars
    (with the secrets, as a vault would give them), controller environment, whether it must fail).
    The recovery playbooks go here as they are written; their output, log and whatever they write
    are searched like the modules'."""
    return []


def playbook_for(batch):
    """One play, one task per run; every result is kept (failures too) and written to a file."""
    tasks = []
    for run in batch:
        tasks.append({"name": run.id, "k2.iceberg_offload." + run.module: run.args,
                      "register": "r_" + run.id.replace("-", "_"), "ignore_errors": True})
    results = dict((run.id, "{{ r_%s }}" % run.id.replace("-", "_")) for run in batch)
    tasks.append({"name": "keep the results", "ansible.builtin.copy": {
        "dest": "{{ k2_results_file }}", "content": "{{ k2_results | to_nice_json }}", "mode": "0600"},
        "vars": {"k2_results": results}})
    return [{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]


def play(playbook, extra_vars, env, log_path):
    cmd = [ANSIBLE_PLAYBOOK, "-vvvv", "-i", "localhost,", "-c", "local", playbook,
           "-e", "ansible_python_interpreter=" + sys.executable, "-e", json.dumps(extra_vars)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=900, check=False,
                          env=ansible_env(dict(env, ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_LOG_PATH=log_path,
                                               ANSIBLE_NOCOLOR="1")))
    return proc.returncode, proc.stdout.decode("utf-8", "replace") + proc.stderr.decode("utf-8", "replace")


def everything_written(w):
    """Text of every place a secret could end up: every table of the schema (watermarks, audit rows,
    backup tables), every backup file, the servers' logs."""
    texts = {}
    for name, rows in w["wdb"].snapshot().items():
        texts["table " + name] = json.dumps(rows, default=str)
    for path in glob.glob(os.path.join(w["backup_dir"], "*")):
        with open(path, errors="replace") as f:
            texts["file " + path] = f.read()
    server = w["pg_server"]
    if not server.external and server.datadir:
        with open(os.path.join(server.datadir, "server.log"), errors="replace") as f:
            texts["postgresql server log"] = f.read()
    for path in glob.glob(os.path.join(w["clickhouse"]["root"], "log", "*.log")):
        with open(path, errors="replace") as f:
            texts["clickhouse " + os.path.basename(path)] = f.read()
    return texts


def leaks(texts):
    return ["%s in %s: ...%s..." % (secret, where, text[max(0, text.index(secret) - 200):text.index(secret) + 50])
            for where, text in texts.items() for secret in SECRETS if secret in text]


@pytest.fixture
def keep_artifacts_on_failure(request, tmp_path):
    """On failure, the playbooks, outputs, logs and results stay in tests/output/test_secrets/ to read."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        import shutil
        dest = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                            "tests", "output", "test_secrets")
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(str(tmp_path), dest, ignore=shutil.ignore_patterns("warehouse"))


def test_no_secret_in_any_output_row_backup_file_or_log(world, keep_artifacts_on_failure):
    w = world
    all_runs = runs(w)
    batches = collections.OrderedDict()
    for run in all_runs:
        batches.setdefault(json.dumps(run.env, sort_keys=True), []).append(run)
    playbook_runs = []
    for i, (env_key, batch) in enumerate(batches.items()):
        path = str(w["tmp"] / ("secrets-%d.yml" % i))
        with open(path, "w") as f:
            yaml.safe_dump(playbook_for(batch), f, sort_keys=False)
        playbook_runs.append((PlaybookRun("modules-%d" % i, path, {"k2_results_file": str(w["tmp"] / ("results-%d.json" % i))},
                                          json.loads(env_key), None), batch))
    playbook_runs.extend((prun, None) for prun in whole_playbooks(w))
    texts, results, wrong_playbooks = {}, {}, {}
    for prun, batch in playbook_runs:
        log = str(w["tmp"] / (prun.id + ".log"))
        rc, texts["output of " + prun.id] = play(prun.playbook, prun.extra_vars, prun.env, log)
        with open(log, errors="replace") as f:
            texts["ansible log of " + prun.id] = f.read()
        if batch is None:
            if (rc != 0) != prun.fails:
                wrong_playbooks[prun.id] = rc
            continue
        with open(prun.extra_vars["k2_results_file"]) as f:
            texts["results of " + prun.id] = f.read()
            results.update(json.loads(texts["results of " + prun.id]))
    texts.update(everything_written(w))
    found = leaks(texts)
    assert not found, "\n".join(found)

    # the runs really went where they should: successes succeeded, failures failed (and said why)
    outcome = dict((run.id, bool(results[run.id].get("failed"))) for run in all_runs)
    wrong = dict((run.id, results[run.id].get("msg")) for run in all_runs if outcome[run.id] != run.fails)
    assert not wrong, wrong
    assert not wrong_playbooks, wrong_playbooks
    for run in all_runs:
        if run.fails:
            assert results[run.id].get("msg") and "Traceback" not in results[run.id]["msg"], results[run.id]
    audit = w["wdb"].audit()
    assert len(audit) >= 8 and any(a[0].endswith("watermark_cleanup") for a in audit)
    assert glob.glob(os.path.join(w["backup_dir"], "*.csv")), "a backup file was written"
    assert any(t.startswith("table offload_watermarks_backup_") for t in texts), "a backup table was written"
    # the audit keeps what matters and no secret option at all
    params = [a[2] for a in audit]
    assert all("login_password" not in p and "clickhouse_password" not in p and "iceberg_catalog_secrets" not in p
               for p in params)
    assert any(p.get("clickhouse_url", "").startswith("http://%s:********@" % SECRET_USER) for p in params)
    assert any(p.get("iceberg_catalog_properties", {}).get("token") == "********" for p in params)


def test_url_credentials_are_used_not_sent_twice(clickhouse):
    """clickhouse_url with user:password@ authenticates as that user (ClickHouse refuses basic auth and
    X-ClickHouse headers together), and a wrong one fails without printing it."""
    if not clickhouse["own_server"]:
        pytest.skip("needs the throwaway ClickHouse server")
    from tests.support.ansible_module import run_module
    hostport = clickhouse["url"].split("://", 1)[1]
    args = {"clickhouse_database": clickhouse["database"], "tables": ["system.one"],
            "timestamp_column": "dummy", "sequence_column": "dummy"}
    good = run_module("offload_source_info", dict(args, clickhouse_url="http://%s:%s@%s" % (
        SECRET_USER, SECRET_PASSWORD, hostport)))
    # system.one has no DateTime column: reaching that check means the credentials were accepted
    assert good["failed"] and "must be DateTime" in good["msg"], good["msg"]
    bad_url = "http://%s:%s@%s" % (SECRET_USER, URL_WRONG, hostport)
    bad = run_module("offload_source_info", dict(args, clickhouse_url=bad_url))
    assert bad["failed"] and "check clickhouse_password" in bad["msg"] and "user %s" % SECRET_USER in bad["msg"]
    assert URL_WRONG not in bad["_stdout"]
    conflict = run_module("offload_source_info", dict(args, clickhouse_user="default", clickhouse_password=CH_WRONG,
                                                      clickhouse_url=bad_url))
    assert conflict["failed"] and "in one place" in conflict["msg"]
    assert URL_WRONG not in conflict["_stdout"] and CH_WRONG not in conflict["_stdout"]
