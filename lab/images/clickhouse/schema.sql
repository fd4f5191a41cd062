CREATE TABLE IF NOT EXISTS default.{table} (
    exchange_timestamp DateTime,
    sequence_number UInt64,
    symbol String,
    side String,
    price Float64,
    quantity Float64
) ENGINE = MergeTree()
PARTITION BY toYYYYMMDD(exchange_timestamp)
ORDER BY (exchange_timestamp, sequence_number)
