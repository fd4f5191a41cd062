"""Fixtures of the integration tests: real servers and warehouses (see tests/support)."""
from tests.support.clickhouse_server import clickhouse  # noqa: F401  pylint: disable=unused-import
from tests.support.iceberg_warehouse import cold_tier  # noqa: F401  pylint: disable=unused-import
