-- Frame results keyed by (stream, sequence) and one summary row per stream.
CREATE TABLE IF NOT EXISTS frames (
    stream_id TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    capture_time_ms BIGINT,
    task TEXT NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (stream_id, sequence)
);
CREATE INDEX IF NOT EXISTS frames_received ON frames (received_ms);
CREATE TABLE IF NOT EXISTS streams (
    stream_id TEXT PRIMARY KEY,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    frames_total BIGINT NOT NULL,
    last_sequence BIGINT NOT NULL
);
