# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the lab's offload job, scheduler, exporter and checker share.

Settings come from the environment (systemd's EnvironmentFile), or from
/etc/k2/offload.env when a script is started by hand with ``docker exec``,
as the runbook does.
"""

import contextlib
import datetime
import fcntl
import io
import os
import re
import urllib.error
import urllib.parse
import urllib.request

ENV_FILE = "/etc/k2/offload.env"
FAULT_DIR = "/etc/k2/faults"
LOCK_DIR = "/run/k2-offload"

COLUMNS = ("exchange_timestamp", "sequence_number", "symbol", "side", "price", "quantity")
WATERMARK_PROPS = ("k2.watermark.max_timestamp", "k2.watermark.sequence_number")


def load_env():
    if os.path.exists(ENV_FILE):
        with open(ENV_FILE) as fh:
            for line in fh:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    k, v = line.split("=", 1)
                    os.environ.setdefault(k, v)
    cfg = {
        "pg_dsn": os.environ.get("K2_PG_DSN", ""),
        "ch_url": os.environ.get("K2_CH_URL", "http://k2-clickhouse:8123/"),
        "catalog_uri": os.environ.get("K2_CATALOG_URI", "sqlite:////home/iceberg/warehouse/catalog.db"),
        "warehouse": os.environ.get("K2_WAREHOUSE", "/home/iceberg/warehouse"),
        "tables": os.environ.get("K2_TABLES", "bronze_trades_binance bronze_trades_kraken").split(),
        "cycle_seconds": float(os.environ.get("K2_CYCLE_SECONDS", "900")),
        "log": os.environ.get("K2_LOG", "/tmp/iceberg-offload-scheduler.log"),
        "watermark_table": os.environ.get("K2_WATERMARK_TABLE", "offload_watermarks"),
    }
    for name in cfg["tables"] + [cfg["watermark_table"]]:
        check_identifier(name)
    return cfg


def check_identifier(name):
    # Table names end up in SQL text (ClickHouse 18.16 has no parameters); allow only plain names.
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$", name):
        raise ValueError("not a plain table name: %r" % (name,))
    return name


def fault_active(name):
    return os.path.exists(os.path.join(FAULT_DIR, name))


def scheduler_fault_active(name):
    """A fault of one scheduler process: the file holds that process' PID, which the
    scheduler passes to its jobs as K2_SCHEDULER_PID. A restarted scheduler (new PID)
    and a job started by hand are not affected."""
    pid = os.environ.get("K2_SCHEDULER_PID")
    if not pid:
        return False
    try:
        with open(os.path.join(FAULT_DIR, name)) as fh:
            return fh.read().strip() == pid
    except OSError:
        return False


@contextlib.contextmanager
def table_lock(table):
    """Held by an offload across 'append to Iceberg' + 'insert watermark', and by
    the checker while it reads, so it never sees one without the other."""
    os.makedirs(LOCK_DIR, exist_ok=True)
    with open(os.path.join(LOCK_DIR, table + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- PostgreSQL -------------------------------------------------------------

def pg_connect(cfg):
    import psycopg2
    return psycopg2.connect(cfg["pg_dsn"], connect_timeout=5, application_name="k2-offload")


def latest_watermark(conn, cfg, table):
    """(max_timestamp, sequence_number) of the latest entry, or None."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT max_timestamp, sequence_number, created_at FROM " + cfg["watermark_table"]
            + " WHERE table_name = %s ORDER BY created_at DESC, id DESC LIMIT 1", (table,))
        row = cur.fetchone()
    return row


# --- ClickHouse --------------------------------------------------------------

class ClickHouseError(RuntimeError):
    pass


def ch_query(cfg, sql, data=None, timeout=120):
    url = cfg["ch_url"].rstrip("/") + "/?" + urllib.parse.urlencode({"query": sql})
    req = urllib.request.Request(url, data=data)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read()
    except urllib.error.HTTPError as exc:
        raise ClickHouseError(exc.read().decode(errors="replace").strip())


def ch_ts(dt):
    return "toDateTime('%s')" % dt.strftime("%Y-%m-%d %H:%M:%S")


def after_pair_sql(table, ts, seq):
    # ClickHouse 18.16: no tuple comparison in WHERE for this use, so spell it out.
    return ("exchange_timestamp > {ts} OR (exchange_timestamp = {ts} AND sequence_number > {seq})"
            .format(ts=ch_ts(ts), seq=int(seq)))


def upto_pair_sql(ts, seq):
    return ("exchange_timestamp < {ts} OR (exchange_timestamp = {ts} AND sequence_number <= {seq})"
            .format(ts=ch_ts(ts), seq=int(seq)))


def read_tsv(payload, names, types):
    """Parse ClickHouse TabSeparated output into an Arrow table."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    if not payload:
        return pa.table({n: pa.array([], type=t) for n, t in zip(names, types)})
    return pacsv.read_csv(
        io.BytesIO(payload),
        read_options=pacsv.ReadOptions(column_names=list(names)),
        parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
        convert_options=pacsv.ConvertOptions(
            column_types=dict(zip(names, types)),
            timestamp_parsers=["%Y-%m-%d %H:%M:%S"]),
    )


def source_rows(cfg, table, where, columns=COLUMNS):
    import pyarrow as pa
    types = {
        "exchange_timestamp": pa.timestamp("s"), "sequence_number": pa.int64(),
        "symbol": pa.string(), "side": pa.string(), "price": pa.float64(), "quantity": pa.float64(),
    }
    sql = "SELECT {cols} FROM {t} WHERE {w} ORDER BY exchange_timestamp, sequence_number FORMAT TabSeparated".format(
        cols=", ".join(columns), t=table, w=where)
    tbl = read_tsv(ch_query(cfg, sql), columns, [types[c] for c in columns])
    if "exchange_timestamp" in columns:
        idx = tbl.schema.get_field_index("exchange_timestamp")
        tbl = tbl.set_column(idx, "exchange_timestamp", tbl.column(idx).cast(pa.timestamp("us")))
    return tbl


# --- Iceberg -----------------------------------------------------------------

def catalog(cfg):
    from pyiceberg.catalog.sql import SqlCatalog
    return SqlCatalog("k2", uri=cfg["catalog_uri"], warehouse="file://" + cfg["warehouse"])


def iceberg_schema():
    from pyiceberg.schema import Schema
    from pyiceberg.types import DoubleType, LongType, NestedField, StringType, TimestampType
    return Schema(
        NestedField(1, "exchange_timestamp", TimestampType(), required=False),
        NestedField(2, "sequence_number", LongType(), required=False),
        NestedField(3, "symbol", StringType(), required=False),
        NestedField(4, "side", StringType(), required=False),
        NestedField(5, "price", DoubleType(), required=False),
        NestedField(6, "quantity", DoubleType(), required=False),
    )


def ensure_cold_tables(cfg):
    cat = catalog(cfg)
    try:
        cat.create_namespace("cold")
    except Exception:  # already there
        pass
    for t in cfg["tables"]:
        ident = "cold." + t
        if not cat.table_exists(ident):
            cat.create_table(ident, schema=iceberg_schema(),
                             location="file://%s/cold/%s" % (cfg["warehouse"], t))
    return cat


def cold_pairs(tbl):
    """Arrow table (exchange_timestamp, sequence_number) of every cold row."""
    return tbl.scan(selected_fields=("exchange_timestamp", "sequence_number")).to_arrow()


def utc(dt):
    return dt.replace(tzinfo=datetime.timezone.utc)
