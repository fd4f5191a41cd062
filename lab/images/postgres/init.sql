-- The watermark table exactly as the runbook's Scenario 3 creates it.
CREATE TABLE IF NOT EXISTS offload_watermarks (
    id SERIAL PRIMARY KEY,
    table_name VARCHAR(255) NOT NULL,
    max_timestamp TIMESTAMP NOT NULL,
    sequence_number BIGINT NOT NULL,
    created_at TIMESTAMP DEFAULT NOW()
);

CREATE INDEX IF NOT EXISTS idx_watermarks_table_created
ON offload_watermarks(table_name, created_at DESC);
