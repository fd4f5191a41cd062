# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Decisions in watermark_ops that need no server: audit parameters, source-name checks, the
choice between DELETE and the TRUNCATE rewrite (with a fake store)."""
import pytest

from ansible_collections.k2.iceberg_offload.plugins.module_utils import watermark_cleanup_run as cleanup_run
from ansible_collections.k2.iceberg_offload.plugins.module_utils import watermark_ops as ops


class FakeConn(object):
    def rollback(self):
        pass


class FakeStore(object):
    def __init__(self, rows=5000000, tables=2, can_rewrite=True):
        self.conn = FakeConn()
        self.rows, self.tables, self._can = rows, tables, can_rewrite

    def estimated_rows(self):
        return self.rows

    def table_names(self):
        return ["t%d" % i for i in range(self.tables)]

    def can_rewrite(self):
        return self._can


def params(**kw):
    p = {"method": "auto", "keep": 10, "older_than": None, "duplicates_only": False, "tables": None,
         "backup": "none"}
    p.update(kw)
    return p


def test_audit_params_drop_password_and_unset():
    out = ops.audit_params({"login_password": "s3cret", "login_user": "prefect", "keep": None, "mode": "replace"})
    assert out == {"login_user": "prefect", "mode": "replace"}


@pytest.mark.parametrize("names,msg", [([""], "empty"), (["x" * 256], "longer than 255"), (["a\tb"], "control")])
def test_source_table_names_refused(names, msg):
    with pytest.raises(ops.OperationError, match=msg):
        ops.check_source_table_names(names)


def test_source_table_names_are_values_not_identifiers():
    odd = ["bronze_trades_binance", "b'; DROP TABLE x; --", "Ünïcode"]
    assert ops.check_source_table_names(odd) == odd


def test_auto_rewrites_big_tables_where_few_rows_stay():
    assert cleanup_run._choose_rewrite(FakeStore(), params(), None) is True


@pytest.mark.parametrize("store,kw", [
    (FakeStore(rows=50000), {}),                          # small table: DELETE is quick and blocks nobody
    (FakeStore(rows=150000, tables=2000), {}),            # too much would stay
    (FakeStore(), {"backup": "table"}),                   # a backup must be exactly the deleted rows
    (FakeStore(), {"tables": ["t0"]}),
    (FakeStore(), {"older_than": "30d"}),
    (FakeStore(), {"duplicates_only": True}),
    (FakeStore(can_rewrite=False), {}),                   # no TRUNCATE privilege or a foreign key
    (FakeStore(), {"method": "delete"}),
])
def test_auto_falls_back_to_delete(store, kw):
    older = 30 * 86400 if kw.get("older_than") else None
    assert cleanup_run._choose_rewrite(store, params(**kw), older) is False


def test_forced_rewrite_refused_with_reason():
    with pytest.raises(ops.OperationError, match="backup=none"):
        cleanup_run._choose_rewrite(FakeStore(), params(method="rewrite", backup="table"), None)
    with pytest.raises(ops.OperationError, match="TRUNCATE"):
        cleanup_run._choose_rewrite(FakeStore(can_rewrite=False), params(method="rewrite"), None)
    assert cleanup_run._choose_rewrite(FakeStore(rows=10), params(method="rewrite"), None) is True


def test_index_names_derive_from_the_table_and_fit_63_bytes():
    from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_sql import index_name_candidates
    runbook = index_name_candidates(("offload_watermarks",))
    assert runbook[:2] == ["idx_watermarks_table_created", "idx_offload_watermarks_table_created"]
    assert index_name_candidates(("s", "other"))[0] == "idx_other_table_created"
    long = index_name_candidates(("w" * 63,))
    assert len(long) == 1 and len(long[0]) <= 63 and long[0].endswith("_table_created")
    assert index_name_candidates(("w" * 63,)) != index_name_candidates(("w" * 62 + "x",))
    assert all(len(n.encode()) <= 63 for t in ("a", "Tbl", "x" * 45, "y" * 50) for n in index_name_candidates((t,)))
