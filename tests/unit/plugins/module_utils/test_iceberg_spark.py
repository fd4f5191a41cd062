# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The spark engine's driver (module_utils/iceberg_spark.py) with spark-submit replaced by a fake:
the command line (no secret, no master), the 0600 properties file, error mapping, result parsing."""
import datetime
import json
import os
import socket
import stat

import pytest

from ansible_collections.k2.iceberg_offload.plugins.module_utils import iceberg_spark as s
from ansible_collections.k2.iceberg_offload.plugins.module_utils.iceberg_repair import (
    ConcurrentCommitError, RepairError)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import Watermark

SECRET = "pg-Secret-0042"
CATALOG = {"type": "sql", "uri": "sqlite:////home/iceberg/warehouse/catalog.db",
           "warehouse": "file:///home/iceberg/warehouse"}


@pytest.fixture
def params(tmp_path):
    submit = tmp_path / "spark-submit"
    submit.write_text("#!/bin/sh\nexit 0\n")
    submit.chmod(0o755)
    jar = tmp_path / "iceberg-spark-runtime.jar"
    jar.write_text("jar")
    return {"iceberg_catalog": "k2", "iceberg_catalog_properties": dict(CATALOG),
            "iceberg_catalog_secrets": {"s3.secret-access-key": SECRET}, "iceberg_table_location": None,
            "spark_master": "local[2]", "spark_submit": str(submit), "spark_jars": [str(jar)],
            "spark_timeout": 60}


class FakeSubmit(object):
    """Records what spark-submit was given and answers as the job would."""

    def __init__(self, answers, code=0, stderr=""):
        self.answers = list(answers)
        self.code = code
        self.stderr = stderr
        self.calls = []

    def __call__(self, argv, env, timeout):
        props_path = argv[argv.index("--properties-file") + 1]
        workdir = os.path.dirname(props_path)
        with open(props_path) as f:
            props = f.read()
        with open(argv[-2]) as f:
            request = json.load(f)
        self.calls.append({"argv": list(argv), "env": env, "props": props, "request": request,
                           "props_mode": stat.S_IMODE(os.stat(props_path).st_mode),
                           "dir_mode": stat.S_IMODE(os.stat(workdir).st_mode), "workdir": workdir,
                           "job": open(argv[-3]).read()})
        answer = self.answers.pop(0)
        if answer is not None:
            with open(argv[-1], "w") as f:
                json.dump(answer, f)
        return self.code if answer is not None or self.code is not None else None, "", self.stderr


def scan_answer(**more):
    result = {"table": {"identifier": "cold.t", "location": "file:///w/cold/t", "metadata_location": "m.json",
                        "format_version": 2},
              "latest_snapshot": {"snapshot_id": 7, "parent_snapshot_id": 6, "timestamp_ms": 1767225600000,
                                  "operation": "append",
                                  "summary": {"k2.watermark.max_timestamp": "2026-01-01 00:03:30",
                                              "k2.watermark.sequence_number": "210", "k2.source_table": "t"}},
              "latest_watermark_snapshot": None, "row_count": 215,
              "min_timestamp_us": 1767225601000000, "max_pair_us": [1767225810000000, 210],
              "duplicates": {"key_column": "sequence_number", "duplicate_rows": 5, "duplicated_keys": 5,
                             "sample": [{"key": 50, "count": 2}], "overlap_groups": None},
              "past_watermark": {"rows": 5, "max_pair_us": [1767225810000000, 210]},
              "scan": {"seconds": 1.0, "data_files": 2, "data_bytes": 10, "batches": None,
                       "arrow_peak_bytes": None, "arrow_pool_max_bytes": None}}
    result.update(more)
    return {"ok": True, "result": result}


# -- the catalog as Spark takes it ------------------------------------------------------------

def test_sql_catalog_becomes_iceberg_jdbc_on_the_same_database():
    props = s.catalog_properties("k2", CATALOG, {})
    assert props["spark.sql.catalog.k2"] == "org.apache.iceberg.spark.SparkCatalog"
    assert props["spark.sql.catalog.k2.type"] == "jdbc"
    assert props["spark.sql.catalog.k2.uri"] == "jdbc:sqlite:/home/iceberg/warehouse/catalog.db"
    assert props["spark.sql.catalog.k2.warehouse"] == "file:///home/iceberg/warehouse"
    assert props["spark.sql.catalog.k2.cache-enabled"] == "false"
    # JdbcCatalog's table-existence check leaves a read transaction open: skipped (the scheduler's
    # commits failed "database is locked" for the whole Spark job without this, tests/lab)
    assert props["spark.sql.catalog.k2.jdbc.init-catalog-tables"] == "false"


def test_postgres_catalog_credentials_go_to_jdbc_properties():
    props = s.catalog_properties("k2", {"type": "sql", "uri": "postgresql+psycopg2://k2:%s@db:5432/cat" % SECRET}, {})
    assert props["spark.sql.catalog.k2.uri"] == "jdbc:postgresql://db:5432/cat"
    assert (props["spark.sql.catalog.k2.jdbc.user"], props["spark.sql.catalog.k2.jdbc.password"]) == ("k2", SECRET)


@pytest.mark.parametrize("name, props, words", [
    ("k2", {}, "with a type"),
    ("k2", {"type": "dynamodb"}, "dynamodb"),
    ("k2 x", CATALOG, "iceberg_catalog"),
    ("k2", {"type": "sql", "uri": "mysql://h/db"}, "mysql"),
])
def test_catalogs_spark_cannot_take_are_refused(name, props, words):
    with pytest.raises(s.SparkEngineError) as e:
        s.catalog_properties(name, props, {})
    assert words in str(e.value)


def test_properties_text_escapes_what_java_properties_would_misread():
    text = s.properties_text({"a=b": "x\\y\nz", "k": " lead"})
    assert text == "a\\=b=x\\\\y\\nz\nk=\\ lead\n"


# -- running the job ------------------------------------------------------------------------------

def test_no_secret_and_no_master_on_the_command_line(params):
    fake = FakeSubmit([scan_answer()])
    s.scan(params, "cold.t", runner=fake)
    call = fake.calls[0]
    argv = " ".join(call["argv"])
    assert SECRET not in argv and "local[2]" not in argv and "catalog" not in argv
    assert call["argv"][:2] == [params["spark_submit"], "--properties-file"]
    assert call["props_mode"] == 0o600 and call["dir_mode"] == 0o700
    assert "spark.sql.catalog.k2.s3.secret-access-key=%s\n" % SECRET in call["props"]
    assert "spark.master=local[2]\n" in call["props"]
    assert "spark.jars=%s\n" % params["spark_jars"][0] in call["props"]
    assert SECRET not in json.dumps(call["request"])
    assert "def op_dedupe" in call["job"]
    assert not os.path.exists(call["workdir"])  # the secrets' file is gone with its directory


def test_scan_answer_in_the_pyiceberg_engines_shape(params):
    out = s.scan(params, "cold.t", watermark=Watermark(datetime.datetime(2026, 1, 1, 0, 3, 25), 205),
                 runner=FakeSubmit([scan_answer()]))
    assert out["row_count"] == 215
    assert out["max_pair"] == Watermark(datetime.datetime(2026, 1, 1, 0, 3, 30), 210)
    assert out["min_timestamp"] == datetime.datetime(2026, 1, 1, 0, 0, 1)
    assert out["past_watermark"]["rows"] == 5
    assert out["past_watermark"]["watermark"] == Watermark(datetime.datetime(2026, 1, 1, 0, 3, 25), 205)
    assert out["duplicates"]["sample"] == [{"key": 50, "count": 2}]
    snap = out["latest_snapshot"]
    assert snap["watermark"] == {"max_timestamp": "2026-01-01 00:03:30", "sequence_number": 210}
    assert snap["summary"]["operation"] == "append" and snap["timestamp"] == "2026-01-01 00:00:00"
    assert out["scan"]["engine"] == "spark"


def test_request_carries_the_watermark_as_microseconds(params):
    fake = FakeSubmit([scan_answer()])
    s.scan(params, "cold.t", watermark=Watermark(datetime.datetime(1970, 1, 1, 0, 0, 1, 5), 3), runner=fake)
    assert fake.calls[0]["request"]["watermark_us"] == [1000005, 3]


def test_empty_table_has_no_pair(params):
    out = s.scan(params, "cold.t", runner=FakeSubmit([scan_answer(max_pair_us=None, min_timestamp_us=None,
                                                                  row_count=0, latest_snapshot=None)]))
    assert (out["max_pair"], out["min_timestamp"], out["latest_snapshot"]) == (None, None, None)


@pytest.mark.parametrize("answer, kind, words", [
    ({"ok": False, "kind": "not_found", "msg": "Iceberg table cold.x not found in catalog k2"}, "not_found",
     "not found"),
    ({"ok": False, "kind": "catalog", "msg": "cannot open Iceberg table cold.x: password %s refused" % SECRET},
     "catalog", "********"),
])
def test_job_errors_come_back_as_messages_without_secrets(params, answer, kind, words):
    with pytest.raises(s.SparkEngineError) as e:
        s.scan(params, "cold.x", runner=FakeSubmit([answer], code=3))
    assert e.value.kind == kind and words in str(e.value) and SECRET not in str(e.value)


def test_spark_submit_without_answer_reports_its_stderr_redacted(params):
    with pytest.raises(s.SparkEngineError) as e:
        s.scan(params, "cold.t", runner=FakeSubmit([None], code=1, stderr="Exception: boom %s" % SECRET))
    assert "exited 1" in str(e.value) and "boom" in str(e.value) and SECRET not in str(e.value)


def test_timeout_says_what_to_do(params):
    with pytest.raises(s.SparkEngineError) as e:
        s.scan(params, "cold.t", runner=FakeSubmit([None], code=None))
    assert e.value.kind == "timeout" and "spark_timeout" in str(e.value) and "nothing was committed" in str(e.value)


# -- checks before Spark starts -------------------------------------------------------------------

def test_missing_jar_named(params):
    params["spark_jars"] = ["/nowhere/iceberg.jar"]
    with pytest.raises(s.SparkEngineError) as e:
        s.scan(params, "cold.t", runner=FakeSubmit([]))
    assert "/nowhere/iceberg.jar" in str(e.value) and "spark_jars" in str(e.value)


def test_missing_spark_submit_named(params):
    params["spark_submit"] = "/nowhere/spark-submit"
    with pytest.raises(s.SparkEngineError) as e:
        s.scan(params, "cold.t", runner=FakeSubmit([]))
    assert "spark_submit" in str(e.value)


@pytest.mark.parametrize("master", ["sc://h:15002", "local[x]", "spark://"])
def test_masters_this_engine_cannot_use(params, master):
    params["spark_master"] = master
    with pytest.raises(s.SparkEngineError) as e:
        s.check_params(params)
    assert "spark_master" in str(e.value)


def test_a_master_that_does_not_answer(params):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    params["spark_master"] = "spark://127.0.0.1:%d" % port
    fake = FakeSubmit([])
    with pytest.raises(s.SparkEngineError) as e:
        s.scan(params, "cold.t", runner=fake)
    assert e.value.kind == "master" and "does not answer" in str(e.value) and not fake.calls


def test_table_location_is_refused(params):
    params["iceberg_table_location"] = "/w/cold/t"
    with pytest.raises(s.SparkEngineError) as e:
        s.check_params(params)
    assert "iceberg_table_location" in str(e.value)


# -- the repair ---------------------------------------------------------------------------------

def dedupe_answer(conflicting=0, commit=True):
    plan = {"snapshot_id": 6, "key_columns": ["sequence_number"], "window": None, "window_text": "all",
            "conflict": "refuse", "duplicated_keys": 5, "rows_to_remove": 5, "conflicting_keys": conflicting,
            "sample": [{"key": {"_ts": "2026-01-01 00:00:50"}, "count": 2, "conflict": False}],
            "conflicts": [],
            "files_to_rewrite": [{"path": "f2", "rows": 15, "rows_to_remove": 5, "rows_kept": 10, "bytes": 100,
                                  "action": "rewrite"}],
            "bytes_to_rewrite": 100, "files_scanned": 2, "bytes_scanned": 200, "rows_scanned": 215,
            "overlap_groups": None, "key_ranges": None}
    result = {"table": {"identifier": "cold.t"}, "plan": plan, "total_records": 215, "find_seconds": 1.0}
    if commit:
        result["commit"] = {"snapshot": {"snapshot_id": 8, "parent_snapshot_id": 6, "timestamp_ms": 0,
                                         "operation": "overwrite", "summary": {"k2.dedupe.rows_removed": "5"}},
                            "files_removed": 1, "files_added": 1, "bytes_removed": 100, "bytes_written": 70,
                            "rows_written": 10, "commit_seconds": 0.1}
    return {"ok": True, "result": result}


def test_dedupe_commit_result_and_rollback(params):
    fake = FakeSubmit([dedupe_answer()])
    r = s.dedupe(params, "cold.t", runner=fake)
    assert fake.calls[0]["request"]["execute"] is True
    assert r["changed"] and r["snapshot_id"] == 8 and r["previous_snapshot_id"] == 6
    assert r["rollback"]["module_args"] == {"rollback_to_snapshot": 6}
    assert r["before"]["rows"] == 215 and r["after"]["rows"] == 210
    assert r["plan"]["sample"][0]["key"] == "2026-01-01 00:00:50"
    assert "window_text" not in r["plan"]


def test_dedupe_check_mode_asks_for_the_plan_only(params):
    fake = FakeSubmit([dedupe_answer(commit=False)])
    r = s.dedupe(params, "cold.t", check_mode=True, runner=fake)
    assert fake.calls[0]["request"]["execute"] is False
    assert r["changed"] and "snapshot_id" not in r


def test_dedupe_refuses_differing_copies(params):
    with pytest.raises(RepairError) as e:
        s.dedupe(params, "cold.t", runner=FakeSubmit([dedupe_answer(conflicting=1, commit=False)]))
    assert "keep_first" in str(e.value) and e.value.details["plan"]["conflicting_keys"] == 1


def test_dedupe_plans_again_after_a_concurrent_commit_then_gives_up(params):
    busy = {"ok": False, "kind": "concurrent", "msg": "another writer committed"}
    r = s.dedupe(params, "cold.t", max_attempts=2, runner=FakeSubmit([busy, dedupe_answer()], code=0))
    assert r["stats"]["attempts"][0]["outcome"].startswith("conflict")
    with pytest.raises(ConcurrentCommitError):
        s.dedupe(params, "cold.t", max_attempts=2, runner=FakeSubmit([busy, busy], code=3))


def test_dedupe_counts_the_plans_the_job_made_again_in_its_own_jvm(params):
    """The job plans again after a lost race without a new spark-submit; its attempts count against
    max_attempts, and a job that used them all is not started again."""
    won = dedupe_answer()
    won["result"]["attempts"] = [{"seconds": 3.0, "outcome": "conflict: another writer committed"},
                                 {"seconds": 2.0, "outcome": "conflict: again"}]
    fake = FakeSubmit([won])
    r = s.dedupe(params, "cold.t", max_attempts=3, runner=fake)
    assert fake.calls[0]["request"]["max_attempts"] == 3
    # numbered in order, the committed plan last (a lab run once read 1, 3, 5 ... then 6)
    assert [a["attempt"] for a in r["stats"]["attempts"]] == [1, 2, 3]
    assert [a["outcome"] for a in r["stats"]["attempts"]] == ["conflict: another writer committed",
                                                              "conflict: again", "committed"]
    lost = {"ok": False, "kind": "concurrent", "msg": "another writer committed",
            "details": {"attempts": [{"outcome": "conflict: a"}, {"outcome": "conflict: b"}]}}
    fake = FakeSubmit([lost, dedupe_answer()], code=3)
    with pytest.raises(ConcurrentCommitError) as e:
        s.dedupe(params, "cold.t", max_attempts=2, runner=fake)
    assert len(fake.calls) == 1 and "2 attempt(s)" in str(e.value)
    assert [a["attempt"] for a in e.value.details["stats"]["attempts"]] == [1, 2]


def test_dedupe_window_not_supported(params):
    with pytest.raises(RepairError) as e:
        s.dedupe(params, "cold.t", window_option={"column": "sequence_number", "from": 1}, runner=FakeSubmit([]))
    assert "window" in str(e.value)
