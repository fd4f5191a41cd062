# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of offload_source_info and iceberg_table_info: option parsing and documentation."""
import datetime

import pytest
import yaml

from ansible_collections.k2.iceberg_offload.plugins.doc_fragments import clickhouse as ch_doc
from ansible_collections.k2.iceberg_offload.plugins.doc_fragments import iceberg as ice_doc
from ansible_collections.k2.iceberg_offload.plugins.module_utils.clickhouse import clickhouse_argument_spec
from ansible_collections.k2.iceberg_offload.plugins.module_utils.iceberg import iceberg_argument_spec
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import Watermark, WatermarkError
from ansible_collections.k2.iceberg_offload.plugins.modules import iceberg_table_info, offload_source_info

TABLES = ["bronze_trades_binance", "bronze_trades_kraken"]


def test_parse_watermarks():
    wm = offload_source_info.parse_watermarks(
        {"bronze_trades_binance": {"max_timestamp": "2026-02-12T12:00:00+02:00", "sequence_number": "7"}},
        TABLES)
    assert wm == {"bronze_trades_binance": Watermark(datetime.datetime(2026, 2, 12, 10), 7)}
    assert offload_source_info.parse_watermarks({}, TABLES) == {}


def test_parse_watermarks_takes_watermark_info_entries():
    latest = {"id": 812, "table_name": "bronze_trades_binance", "max_timestamp": "2026-02-12 10:00:00",
              "sequence_number": 1234567, "created_at": "2026-02-12 10:15:02.123456"}
    assert offload_source_info.parse_watermarks({"bronze_trades_binance": latest}, TABLES) == {
        "bronze_trades_binance": Watermark(datetime.datetime(2026, 2, 12, 10), 1234567)}


@pytest.mark.parametrize("raw,msg", [
    ({"other": {"max_timestamp": "2026-02-12T10:00:00", "sequence_number": 1}}, "not in tables"),
    ({"bronze_trades_binance": "2026-02-12T10:00:00"}, "max_timestamp and sequence_number"),
    ({"bronze_trades_binance": {"max_timestamp": "2026-02-12T10:00:00"}}, "max_timestamp and sequence"),
    ({"bronze_trades_binance": {"max_timestamp": "2026-02-12T10:00:00", "sequence_number": 1,
                                "sequence": 2}}, "unknown keys sequence"),
    ({"bronze_trades_binance": {"max_timestamp": "2026-02-12T10:00:00", "sequence_number": 1,
                                "table_name": "bronze_trades_kraken"}}, "is the entry of table"),
    ({"bronze_trades_binance": {"max_timestamp": "2026-02-30T10:00:00", "sequence_number": 1}}, "ISO 8601"),
    ({"bronze_trades_binance": {"max_timestamp": "2026-02-12T10:00:00", "sequence_number": 1.5}},
     "integer"),
    ({"bronze_trades_binance": {"max_timestamp": "2026-02-12T10:00:00", "sequence_number": True}},
     "integer"),
])
def test_parse_watermarks_refuses(raw, msg):
    with pytest.raises(WatermarkError, match=msg):
        offload_source_info.parse_watermarks(raw, TABLES)


def _documented_options(module, fragment):
    options = dict(yaml.safe_load(module.DOCUMENTATION)["options"])
    options.update(yaml.safe_load(fragment.ModuleDocFragment.DOCUMENTATION)["options"])
    return options


@pytest.mark.parametrize("module,fragment,spec", [
    (offload_source_info, ch_doc, clickhouse_argument_spec),
    (iceberg_table_info, ice_doc, iceberg_argument_spec),
])
def test_every_option_is_documented_with_its_default(module, fragment, spec):
    documented = _documented_options(module, fragment)
    source = open(module.__file__).read()
    shared = spec()
    for name, opt in shared.items():
        assert name in documented, name
        assert documented[name].get("default") == opt.get("default") or (
            opt.get("default") is None and "default" not in documented[name]), name
        assert documented[name]["type"] == opt["type"], name
    module_only = set(documented) - set(shared)
    for name in module_only:
        assert "%s=dict(" % name in source, "%s documented but not in the argument spec" % name


@pytest.mark.parametrize("module", [offload_source_info, iceberg_table_info])
def test_return_and_examples_parse(module):
    ret = yaml.safe_load(module.RETURN)
    assert all("description" in v and "returned" in v and "type" in v for v in ret.values())
    assert isinstance(yaml.safe_load(module.EXAMPLES), list)
