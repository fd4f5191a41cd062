# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Names resolved as PostgreSQL resolves them (issue 9): unquoted names fold to lower case, a
double-quoted part is case-sensitive, and the (table_name, created_at DESC) index is found by what it
is on THIS table, named after the table, so a second watermark table in a schema gets its own."""
import pytest

RUNBOOK_DDL = ("CREATE TABLE {t} (id SERIAL PRIMARY KEY, table_name VARCHAR(255) NOT NULL,"
               " max_timestamp TIMESTAMP NOT NULL, sequence_number BIGINT NOT NULL,"
               " created_at TIMESTAMP DEFAULT NOW())")
PAIR = dict(tables=["b"], strategy="pair", max_timestamp="2026-02-13T00:00:00Z", sequence_number=99)


def relations(wdb):
    return sorted(r[0] for r in wdb.sql("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                                        " WHERE n.nspname = %s AND relkind IN ('r', 'i')", (wdb.schema,)))


def indexes_of(wdb, table):
    return wdb.sql("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s"
                   " AND indexdef NOT LIKE '%%(id)' ORDER BY 1", (wdb.schema, table))


@pytest.mark.parametrize("spelling", ["{s}.Offload_Watermarks", "{S}.OFFLOAD_WATERMARKS", "{S}.offload_watermarks"])
def test_capitalised_names_are_the_scheduler_table(wdb, spelling):
    """Unquoted, any capitalisation is the scheduler's offload_watermarks: no false Scenario 3, no
    second table."""
    wdb.create_table()
    wdb.fill("b", 5)
    name = spelling.format(s=wdb.schema, S=wdb.schema.upper())
    before = relations(wdb)
    r = wdb.run("watermark_info", watermark_table=name)
    assert r["table_exists"] and r["index_exists"] and [t["table_name"] for t in r["tables"]] == ["b"], r["findings"]
    assert r["watermark_table"] == wdb.table
    r = wdb.run("watermark_reset", watermark_table=name)
    assert not r["failed"] and not r["changed"], r
    r = wdb.run("watermark_reset", watermark_table=name, **PAIR)
    assert r["changed"] and wdb.rows()[-1][3] == 99
    r = wdb.run("watermark_cleanup", watermark_table=name, audit_table=wdb.schema.upper() + ".Offload_Watermark_Audit",
                keep=1, backup="none")
    assert r["changed"] and len(wdb.rows()) == 1
    assert relations(wdb) == sorted(before + ["offload_watermark_audit", "offload_watermark_audit_pkey"])


def test_a_quoted_name_is_a_case_sensitive_table(wdb):
    wdb.sql(RUNBOOK_DDL.format(t='%s."Offload_Watermarks"' % wdb.schema))
    quoted = '%s."Offload_Watermarks"' % wdb.schema
    r = wdb.run("watermark_info", watermark_table=quoted)
    assert r["table_exists"] and not r["index_exists"] and r["watermark_table"] == quoted
    r = wdb.run("watermark_reset", watermark_table=quoted)
    assert r["changed"] and r["created_index"] and not r["created_table"]
    assert r["index_name"] == "idx_Offload_Watermarks_table_created"
    assert not wdb.run("watermark_reset", watermark_table=quoted)["changed"]
    r = wdb.run("watermark_reset", watermark_table=quoted, **PAIR)
    assert r["changed"]
    assert wdb.sql('SELECT sequence_number FROM %s."Offload_Watermarks"' % wdb.schema) == [(99,)]
    # unquoted, the same letters name another table: offload_watermarks, which does not exist
    r = wdb.run("watermark_info", watermark_table=wdb.schema + ".Offload_Watermarks")
    assert not r["table_exists"]


def test_a_second_watermark_table_in_the_schema_gets_its_own_index(wdb):
    wdb.create_table()  # offload_watermarks with the runbook's idx_watermarks_table_created
    other = wdb.schema + ".other_watermarks"
    r = wdb.run("watermark_reset", watermark_table=other)
    assert r["changed"] and r["created_table"] and r["created_index"]
    assert r["index_name"] == "idx_other_watermarks_table_created"
    assert [i[0] for i in indexes_of(wdb, "other_watermarks")] == ["idx_other_watermarks_table_created"]
    r = wdb.run("watermark_reset", watermark_table=other)
    assert not r["changed"], r
    r = wdb.run("watermark_info", watermark_table=other)
    assert r["index_exists"] and r["index_name"] == "idx_other_watermarks_table_created"
    # and the runbook's table keeps its runbook index as present
    r = wdb.run("watermark_info")
    assert r["index_exists"] and r["index_name"] == "idx_watermarks_table_created"
    assert not wdb.run("watermark_reset")["changed"]


def test_the_runbook_index_name_on_another_table_does_not_count(wdb):
    """A table whose derived index name is the runbook's (watermarks -> idx_watermarks_table_created)
    next to offload_watermarks: both get their index."""
    wdb.create_table()
    r = wdb.run("watermark_reset", watermark_table=wdb.schema + ".watermarks")
    assert r["changed"] and r["created_index"]
    assert r["index_name"] != "idx_watermarks_table_created" and len(r["index_name"]) <= 63
    assert [i[0] for i in indexes_of(wdb, "watermarks")] == [r["index_name"]]
    assert not wdb.run("watermark_reset", watermark_table=wdb.schema + ".watermarks")["changed"]


@pytest.mark.parametrize("definition, accepted", [
    ("CREATE INDEX my_own_name ON {t} (table_name, created_at DESC)", True),
    ("CREATE INDEX idx_watermarks_table_created ON {t} (table_name, created_at DESC, id DESC)", True),
    ("CREATE INDEX idx_watermarks_table_created ON {t} (created_at)", False),
    ("CREATE INDEX idx_watermarks_table_created ON {t} (table_name, created_at)", False),
    ("CREATE INDEX idx_watermarks_table_created ON {t} (created_at DESC, table_name)", False),
    ("CREATE INDEX idx_watermarks_table_created ON {t} (table_name, created_at DESC) WHERE id > 0", False),
    ("CREATE INDEX idx_watermarks_table_created ON {t} USING hash (table_name)", False),
])
def test_the_index_is_recognised_by_what_it_is(wdb, definition, accepted):
    wdb.sql(RUNBOOK_DDL.format(t=wdb.table))
    wdb.sql(definition.format(t=wdb.table))
    r = wdb.run("watermark_info")
    assert r["index_exists"] is accepted
    r = wdb.run("watermark_reset")
    assert r["changed"] is not accepted and r["created_index"] is not accepted
    if not accepted:
        assert r["index_name"] == "idx_offload_watermarks_table_created"
    r = wdb.run("watermark_reset")
    assert not r["changed"]
    assert wdb.run("watermark_info")["index_exists"]


def test_a_long_table_name_gets_an_index_name_within_63_bytes(wdb):
    long_name = "w" * 63
    r = wdb.run("watermark_reset", watermark_table="%s.%s" % (wdb.schema, long_name))
    assert r["changed"] and r["created_index"] and len(r["index_name"]) <= 63
    assert r["index_name"].startswith("idx_w") and r["index_name"].endswith("_table_created")
    assert not wdb.run("watermark_reset", watermark_table="%s.%s" % (wdb.schema, long_name))["changed"]


def test_audit_and_backup_names_fold_too(wdb):
    wdb.create_table()
    wdb.fill("b", 5)
    r = wdb.run("watermark_cleanup", keep=1, audit_table=wdb.schema + ".My_Audit", backup="table",
                backup_table=wdb.schema + ".My_Backup")
    assert r["changed"] and r["backup"] == wdb.schema + ".my_backup"
    assert wdb.exists(wdb.schema + ".my_audit") and wdb.exists(wdb.schema + ".my_backup")
