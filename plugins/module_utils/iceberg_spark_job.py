# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Spark job of the cold tier's ``spark`` engine: a PySpark program, not imported by Ansible.

Private to this collection. iceberg_spark.py writes this file into a private directory on the
``k2_spark`` host and runs it with ``spark-submit JOB REQUEST RESULT``; the catalog's settings
(secrets included) reach Spark through ``--properties-file``, never the command line. The
request is JSON (the operation and its options), the result JSON in the pyiceberg engine's
raw shape (pairs as microseconds since the epoch; iceberg_spark.py turns them into the same
values the pyiceberg engine returns).

Operations: ``scan`` (count, greatest pair, duplicated keys, rows past a watermark),
``max_pair`` (the cold tier's greatest pair) and ``dedupe`` (the plan, and with ``execute``
one atomic OVERWRITE commit that replaces exactly the data files holding extra copies).
The table's metadata is read through Iceberg's Java API on the driver (py4j), the rows by
Spark, and the commit is Iceberg's ``OverwriteFiles`` validated from the snapshot read: a
concurrent append makes it fail (nothing committed) rather than be rebased over.
"""

import json
import sys
import time
import traceback
import uuid

# Exit codes the caller maps to messages.
EXIT_USER = 3        # a clear error the result file describes (no such table, refused conflicts...)
EXIT_INTERNAL = 4    # anything else; the result file holds the exception

PROPERTY_PREFIX = "k2.dedupe."
SQLITE_BUSY_ATTEMPTS = 6
_FILE = "_file"
_POS = "_pos"
_RANK = "_k2_rank"
_ORDER = "_k2_seq"


class JobError(Exception):
    def __init__(self, msg, kind="user", details=None):
        Exception.__init__(self, msg)
        self.kind = kind
        self.details = details or {}


def quote(identifier):
    return ".".join("`%s`" % part.replace("`", "``") for part in identifier.split("."))


def micros_expr(F, column, data_type):
    name = type(data_type).__name__
    if name == "TimestampNTZType":
        return F.unix_micros(F.col(column).cast("timestamp"))
    if name == "TimestampType":
        return F.unix_micros(F.col(column))
    raise JobError("column %s is %s; timestamp_column must be an Iceberg timestamp"
                   % (column, data_type.simpleString()))


def check_column(df, name, what):
    if name not in df.columns:
        raise JobError("table has no column %s (%s); columns: %s" % (name, what, ", ".join(df.columns)))
    return df.schema[name].dataType


def jsonable(value):
    import datetime
    import decimal
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return {"_ts": value.isoformat(sep=" ")}
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


class Job(object):
    def __init__(self, spark, request):
        self.spark = spark
        self.request = request
        self.jvm = spark.sparkContext._jvm
        self.name = "%s.%s" % (request["catalog"], request["table"])

    # -- the table's metadata, through Iceberg's Java API ------------------------------------

    def load(self, attempts=3):
        for attempt in range(1, attempts + 1):
            try:
                return self.jvm.org.apache.iceberg.spark.Spark3Util.loadIcebergTable(
                    self.spark._jsparkSession, quote(self.name))
            except Exception as e:  # py4j wraps Java's exceptions
                text = str(e)
                # A sqlite catalog busy with the scheduler's commit: reading again is safe.
                if attempt < attempts and ("SQLITE_BUSY" in text or "UncheckedSQLException" in text):
                    time.sleep(2 * attempt)
                    continue
                self._load_failed(text)

    def _load_failed(self, text):
        if "NoSuchTableException" in text or "TABLE_OR_VIEW_NOT_FOUND" in text or "NoSuchNamespaceException" in text:
            raise JobError("Iceberg table %s not found in catalog %s"
                           % (self.request["table"], self.request["catalog"]), "not_found")
        raise JobError("cannot open Iceberg table %s through Spark's catalog %s: %s; check iceberg_catalog and "
                       "iceberg_catalog_properties (as Spark's Iceberg catalog takes them, docs/spark.md)"
                       % (self.request["table"], self.request["catalog"], _java_message(text)), "catalog")

    def table_info(self, table):
        current = table.operations().current()
        return {"identifier": self.request["table"], "location": table.location(),
                "metadata_location": current.metadataFileLocation(),
                "format_version": current.formatVersion()}

    def snapshot(self, snap):
        if snap is None:
            return None
        summary = dict((str(k), str(v)) for k, v in dict(snap.summary()).items())
        parent = snap.parentId()
        return {"snapshot_id": snap.snapshotId(), "parent_snapshot_id": None if parent is None else int(parent),
                "timestamp_ms": snap.timestampMillis(), "operation": snap.operation(), "summary": summary}

    def snapshots(self, table, walk_limit=100000):
        """The current snapshot and the newest one carrying a watermark (as the pyiceberg engine)."""
        current = table.currentSnapshot()
        latest = self.snapshot(current)
        snap, seen, marked = current, 0, None
        while snap is not None and seen < walk_limit:
            summary = snap.summary()
            if summary.containsKey("k2.watermark.max_timestamp") and \
                    summary.containsKey("k2.watermark.sequence_number"):
                marked = self.snapshot(snap)
                break
            parent = snap.parentId()
            snap = table.snapshot(parent) if parent is not None else None
            seen += 1
        return latest, marked

    def frame(self, snapshot_id):
        reader = self.spark.read.format("iceberg")
        if snapshot_id is not None:
            reader = reader.option("snapshot-id", str(snapshot_id))
        return reader.load(self.name)

    def files(self, table, snapshot_id):
        """{path: (DataFile, data sequence number)} of the snapshot's live data files."""
        out = {}
        scan = table.newScan().useSnapshot(snapshot_id) if snapshot_id is not None else table.newScan()
        tasks = scan.planFiles()
        iterator = tasks.iterator()
        try:
            while iterator.hasNext():
                task = iterator.next()
                data_file = task.file()
                if task.deletes().size():
                    raise JobError("table %s has delete files (merge-on-read deletes); compact it first "
                                   "(rewrite_data_files) or use engine pyiceberg" % self.request["table"])
                out[str(data_file.path())] = (data_file, data_file.dataSequenceNumber())
        finally:
            tasks.close()
        return out

    # -- operations ----------------------------------------------------------------------------

    def op_scan(self):
        from pyspark.sql import functions as F
        r = self.request
        started = time.time()
        table = self.load()
        current = table.currentSnapshot()
        latest, marked = self.snapshots(table)
        result = {"table": self.table_info(table), "latest_snapshot": latest,
                  "latest_watermark_snapshot": marked, "row_count": 0, "min_timestamp_us": None,
                  "max_pair_us": None, "duplicates": None, "past_watermark": None}
        files = self.files(table, current.snapshotId()) if current is not None else {}
        df = self.frame(current.snapshotId() if current is not None else None)
        ts_type = check_column(df, r["timestamp_column"], "timestamp_column")
        seq_type = check_column(df, r["sequence_column"], "sequence_column")
        check_column(df, r["key_column"], "key_column")
        if seq_type.simpleString() not in ("bigint", "int"):
            raise JobError("column %s is %s; sequence_column must be an Iceberg long or int"
                           % (r["sequence_column"], seq_type.simpleString()))
        ts = micros_expr(F, r["timestamp_column"], ts_type)
        seq = F.col(r["sequence_column"]).cast("long")
        pairs = df.select(ts.alias("ts"), seq.alias("seq"), F.col(r["key_column"]).alias("key"))
        if r.get("max_pair_only"):
            row = pairs.agg(F.max(F.struct("ts", "seq")).alias("mx")).collect()[0]
            result["max_pair_us"] = [row.mx.ts, row.mx.seq] if row.mx is not None and row.mx.ts is not None \
                else None
            result["scan"] = self.stats(started, files)
            return result
        aggregations = [F.count(F.lit(1)).alias("n"), F.min("ts").alias("low"),
                        F.max(F.when(F.col("ts").isNotNull(), F.struct("ts", "seq"))).alias("mx")]
        watermark = r.get("watermark_us")
        if watermark is not None:
            past = (F.col("ts") > F.lit(watermark[0])) | \
                ((F.col("ts") == F.lit(watermark[0])) & (F.col("seq") > F.lit(watermark[1])))
            aggregations += [F.sum(F.when(past, 1).otherwise(0)).alias("past_n"),
                             F.max(F.when(past, F.struct("ts", "seq"))).alias("past_mx")]
        row = pairs.agg(*aggregations).collect()[0]
        result["row_count"] = int(row.n)
        result["min_timestamp_us"] = row.low
        result["max_pair_us"] = [row.mx.ts, row.mx.seq] if row.mx is not None else None
        if watermark is not None:
            result["past_watermark"] = {
                "rows": int(row.past_n or 0),
                "max_pair_us": [row.past_mx.ts, row.past_mx.seq] if row.past_mx is not None else None}
        if r.get("duplicates", True):
            counts = pairs.where(F.col("key").isNotNull()).groupBy("key").count().where("count > 1")
            counts = counts.cache()
            total = counts.agg(F.count(F.lit(1)).alias("keys"), F.sum(F.col("count") - 1).alias("rows")).collect()[0]
            sample = []
            if r.get("sample_size", 10):
                for item in counts.orderBy(F.desc("count"), F.asc("key")).limit(r["sample_size"]).collect():
                    sample.append({"key": jsonable(item.key), "count": int(item["count"])})
            counts.unpersist()
            result["duplicates"] = {"key_column": r["key_column"], "duplicate_rows": int(total.rows or 0),
                                    "duplicated_keys": int(total["keys"]), "sample": sample,
                                    "overlap_groups": None}
        result["scan"] = self.stats(started, files)
        return result

    def stats(self, started, files):
        return {"seconds": round(time.time() - started, 3), "data_files": len(files),
                "data_bytes": sum(f[0].fileSizeInBytes() for f in files.values()),
                "batches": None, "arrow_peak_bytes": None, "arrow_pool_max_bytes": None}

    def op_dedupe(self):
        """Plan and commit; when another writer commits first, plan again in this JVM (seconds, not a new
        spark-submit) up to the request's max_attempts. ``attempts`` lists the plans that lost the race."""
        attempts = []
        limit = max(1, int(self.request.get("max_attempts") or 1))
        while True:
            started = time.time()
            try:
                result = self.dedupe_once()
            except JobError as e:
                if e.kind != "concurrent":
                    raise
                attempts.append({"seconds": round(time.time() - started, 3), "outcome": "conflict: %s" % str(e)[:300]})
                if len(attempts) >= limit:
                    raise JobError(str(e), "concurrent", {"attempts": attempts})
                continue
            result["attempts"] = attempts
            return result

    def dedupe_once(self):
        from pyspark.sql import Window
        from pyspark.sql import functions as F
        r = self.request
        started = time.time()
        keys = list(r["key_columns"])
        conflict = r["conflict"]
        table = self.load()
        current = table.currentSnapshot()
        info = self.table_info(table)
        plan = {"snapshot_id": current.snapshotId() if current is not None else None, "key_columns": keys,
                "window": None, "window_text": "all", "conflict": conflict,
                "duplicated_keys": 0, "rows_to_remove": 0, "conflicting_keys": 0, "sample": [], "conflicts": [],
                "files_to_rewrite": [], "bytes_to_rewrite": 0, "files_scanned": 0, "bytes_scanned": 0,
                "rows_scanned": 0, "overlap_groups": None, "key_ranges": None}
        result = {"table": info, "plan": plan, "total_records": None}
        if current is None:
            return result
        total = current.summary().get("total-records")
        result["total_records"] = int(total) if total is not None and str(total).isdigit() else None
        files = self.files(table, current.snapshotId())
        plan["files_scanned"] = len(files)
        plan["bytes_scanned"] = sum(f[0].fileSizeInBytes() for f in files.values())
        df = self.frame(current.snapshotId())
        for k in keys:
            check_column(df, k, "key_columns")
        compare = [c for c in df.columns if c not in keys]
        order = self.spark.createDataFrame([(path, int(seq)) for path, (f, seq) in files.items()],
                                           "%s string, %s long" % (_FILE, _ORDER))
        rows = df.select("*", F.col(_FILE), F.col(_POS))
        valid = None
        for k in keys:
            valid = F.col(k).isNotNull() if valid is None else (valid & F.col(k).isNotNull())
        rows = rows.where(valid)
        plan["rows_scanned"] = result["total_records"] or 0
        dup_keys = rows.groupBy(*keys).count().where("count > 1")
        copies = rows.join(dup_keys.select(*keys), keys).join(F.broadcast(order), _FILE)
        # One fingerprint of the other columns: copies that differ have more than one.
        fingerprint = F.xxhash64(*[F.col(c) for c in compare]) if compare else F.lit(0)
        first = Window.partitionBy(*keys).orderBy(F.col(_ORDER), F.col(_FILE), F.col(_POS))
        last = Window.partitionBy(*keys).orderBy(F.col(_ORDER).desc(), F.col(_FILE).desc(), F.col(_POS).desc())
        whole = Window.partitionBy(*keys)
        marked = copies.withColumn("_fp", fingerprint) \
            .withColumn("_distinct", F.size(F.collect_set("_fp").over(whole))) \
            .withColumn("_copies", F.count(F.lit(1)).over(whole)) \
            .withColumn("_first", F.row_number().over(first)) \
            .withColumn("_last", F.row_number().over(last))
        keep_last = F.lit(conflict == "keep_last") & (F.col("_distinct") > 1)
        marked = marked.withColumn("_kept", F.when(keep_last, F.col("_last") == 1).otherwise(F.col("_first") == 1))
        marked = marked.cache()
        summary = marked.agg(F.countDistinct(*keys).alias("keys"),
                             F.sum(F.when(~F.col("_kept"), 1).otherwise(0)).alias("remove"),
                             F.countDistinct(F.when(F.col("_distinct") > 1, F.struct(*keys))).alias("conflicts")
                             ).collect()[0]
        plan["duplicated_keys"] = int(summary["keys"])
        plan["rows_to_remove"] = int(summary["remove"] or 0)
        plan["conflicting_keys"] = int(summary["conflicts"] or 0)
        size = r.get("sample_size", 10)
        if size and plan["duplicated_keys"]:
            top = marked.groupBy(*keys).agg(F.max("_copies").alias("count"), F.max(F.col("_distinct") > 1)
                                             .alias("conflict"))
            for item in top.orderBy(F.desc("count"), *[F.asc(k) for k in keys]).limit(size).collect():
                plan["sample"].append({"key": self.key_of(item, keys), "count": int(item["count"]),
                                       "conflict": bool(item["conflict"])})
        if size and plan["conflicting_keys"]:
            wanted = marked.where(F.col("_distinct") > 1).select(*keys).distinct() \
                .orderBy(*[F.asc(k) for k in keys]).limit(size)
            shown = {}
            order_of = []
            ordering = [F.asc(k) for k in keys] + [F.asc(_ORDER), F.asc(_FILE), F.asc(_POS)]
            for item in marked.join(wanted, keys).orderBy(*ordering).collect():
                key = self.key_of(item, keys)
                marker = repr(key)
                if marker not in shown:
                    shown[marker] = {"key": key, "copies": []}
                    order_of.append(marker)
                if len(shown[marker]["copies"]) < 10:
                    shown[marker]["copies"].append({
                        "file": item[_FILE], "position": int(item[_POS]), "kept": bool(item["_kept"]),
                        "values": dict((c, jsonable(item[c])) for c in compare)})
            plan["conflicts"] = [shown[m] for m in order_of]
        removals = marked.where(~F.col("_kept")).select(_FILE, _POS).cache()
        per_file = dict((row[_FILE], int(row["n"])) for row in removals.groupBy(_FILE).count()
                        .withColumnRenamed("count", "n").collect())
        for path in sorted(per_file, key=lambda p: (files[p][1], p)):
            data_file = files[path][0]
            count = int(data_file.recordCount())
            plan["files_to_rewrite"].append({
                "path": path, "rows": count, "rows_to_remove": per_file[path],
                "rows_kept": count - per_file[path], "bytes": int(data_file.fileSizeInBytes()),
                "action": "drop" if per_file[path] >= count else "rewrite"})
            plan["bytes_to_rewrite"] += int(data_file.fileSizeInBytes())
        result["find_seconds"] = round(time.time() - started, 3)
        if plan["conflicting_keys"] and conflict == "refuse":
            return result
        if not r.get("execute") or not plan["files_to_rewrite"]:
            return result
        result["commit"] = self.commit(table, current.snapshotId(), files, plan, df, removals)
        return result

    def key_of(self, row, keys):
        if len(keys) == 1:
            return jsonable(row[keys[0]])
        return dict((k, jsonable(row[k])) for k in keys)

    def commit(self, table, read_snapshot_id, files, plan, df, removals):
        """Rewrite the files that lose rows with Iceberg's Spark writer (staged, not committed), then one
        OverwriteFiles: delete those files, add their rewrites, validated from the snapshot read."""
        from pyspark.sql import functions as F
        started = time.time()
        jvm = self.jvm
        paths = [item["path"] for item in plan["files_to_rewrite"]]
        rewrite_paths = [item["path"] for item in plan["files_to_rewrite"] if item["action"] == "rewrite"]
        added = []
        if rewrite_paths:
            group = "k2-dedupe-" + uuid.uuid4().hex
            kept = df.select("*", F.col(_FILE), F.col(_POS)).where(F.col(_FILE).isin(rewrite_paths)) \
                .join(removals, [_FILE, _POS], "left_anti").drop(_FILE, _POS)
            # One output file per input file, in the table's own order of columns.
            kept = kept.repartition(len(rewrite_paths)).select(*list(df.columns))
            kept.write.format("iceberg").option("rewritten-file-scan-task-set-id", group) \
                .mode("append").save(self.name)
            coordinator = jvm.org.apache.iceberg.spark.FileRewriteCoordinator.get()
            new_files = coordinator.fetchNewFiles(table, group)
            coordinator.clearRewrite(table, group)
            iterator = new_files.iterator()
            while iterator.hasNext():
                added.append(iterator.next())
        props = {
            "k2.operation": "dedupe",
            PROPERTY_PREFIX + "key_columns": ",".join(plan["key_columns"]),
            PROPERTY_PREFIX + "window": plan["window_text"],
            PROPERTY_PREFIX + "conflict": plan["conflict"],
            PROPERTY_PREFIX + "duplicated_keys": str(plan["duplicated_keys"]),
            PROPERTY_PREFIX + "rows_removed": str(plan["rows_to_remove"]),
            PROPERTY_PREFIX + "conflicting_keys": str(plan["conflicting_keys"]),
            PROPERTY_PREFIX + "files_rewritten": str(len(paths)),
            PROPERTY_PREFIX + "files_added": str(len(added)),
            PROPERTY_PREFIX + "replaces_snapshot_id": str(read_snapshot_id),
            PROPERTY_PREFIX + "engine": "spark",
        }
        for attempt in range(1, SQLITE_BUSY_ATTEMPTS + 1):
            overwrite = table.newOverwrite()
            for path in paths:
                overwrite.deleteFile(files[path][0])
            for data_file in added:
                overwrite.addFile(data_file)
            overwrite.validateFromSnapshot(read_snapshot_id)
            overwrite.conflictDetectionFilter(jvm.org.apache.iceberg.expressions.Expressions.alwaysTrue())
            overwrite.validateNoConflictingData()
            overwrite.validateNoConflictingDeletes()
            for k, v in props.items():
                overwrite.set(k, v)
            try:
                overwrite.commit()
                break
            except Exception as e:
                text = str(e)
                # SQLITE_BUSY: the catalog's UPDATE of the pointer did not run (sqlite executes a statement
                # whole or not at all), so the commit did not land and may be made again; the validation
                # from the snapshot read still refuses whatever another writer committed meanwhile.
                if "SQLITE_BUSY" in text and attempt < SQLITE_BUSY_ATTEMPTS:
                    time.sleep(2 * attempt)
                    table.refresh()
                    continue
                for data_file in added:
                    try:
                        table.io().deleteFile(str(data_file.path()))
                    except Exception:
                        pass
                if "ValidationException" in text or "CommitFailedException" in text:
                    raise JobError("another writer committed to the table after snapshot %d was read (%s); "
                                   "nothing was committed by this run. Run it again"
                                   % (read_snapshot_id, _java_message(text)), "concurrent")
                raise
        table.refresh()
        snap = table.currentSnapshot()
        return {"snapshot": self.snapshot(snap), "files_removed": len(paths), "files_added": len(added),
                "bytes_removed": plan["bytes_to_rewrite"],
                "bytes_written": sum(int(f.fileSizeInBytes()) for f in added),
                "rows_written": sum(int(f.recordCount()) for f in added),
                "commit_seconds": round(time.time() - started, 3)}


def _java_message(text):
    """The first line of a py4j error that names a Java exception, without the Java stack."""
    for line in str(text).splitlines():
        line = line.strip()
        if "Exception" in line or "Error" in line:
            return line[:400]
    return str(text).strip().splitlines()[0][:400] if str(text).strip() else "unknown error"


def main(argv):
    request_path, result_path = argv[1], argv[2]
    with open(request_path) as f:
        request = json.load(f)
    code = 0
    try:
        from pyspark.sql import SparkSession
        spark = SparkSession.builder.appName("k2-cold-%s" % request["operation"]).getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
        job = Job(spark, request)
        if request["operation"] == "scan":
            out = {"ok": True, "result": job.op_scan()}
        elif request["operation"] == "dedupe":
            out = {"ok": True, "result": job.op_dedupe()}
        else:
            raise JobError("unknown operation %r" % request["operation"], "internal")
    except JobError as e:
        out = {"ok": False, "kind": e.kind, "msg": str(e), "details": e.details}
        code = EXIT_USER
    except Exception as e:  # anything Spark or Java raised: the caller reports its first line
        out = {"ok": False, "kind": "internal", "msg": "%s: %s" % (type(e).__name__, _java_message(str(e))),
               "traceback": traceback.format_exc()[-4000:]}
        code = EXIT_INTERNAL
    with open(result_path, "w") as f:
        json.dump(out, f)
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
