-- Frame results keyed by (stream, sequence) and one summary row per stream.
CREATE TABLE IF NOT EXISTS frames (
    stream_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    capture_time_ms INTEGER,
    task TEXT NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (stream_id, sequence)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS frames_received ON frames (received_ms);
CREATE TABLE IF NOT EXISTS streams (
    stream_id TEXT PRIMARY KEY,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    frames_total INTEGER NOT NULL,
    last_sequence INTEGER NOT NULL
) WITHOUT ROWID;
