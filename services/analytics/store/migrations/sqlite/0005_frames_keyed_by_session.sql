-- A frame is keyed by (stream, session, sequence): a rebooted device counts from 0 again
-- in a new session, and its earlier sessions' frames stay stored beside the new ones
-- (they used to be deleted). SQLite cannot change a primary key in place, so the table
-- is copied; every row is kept.
CREATE TABLE frames_by_session (
    stream_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    capture_time_ms INTEGER,
    task TEXT NOT NULL,
    result TEXT NOT NULL,
    session TEXT NOT NULL DEFAULT '',
    digest TEXT,
    request_id TEXT,
    PRIMARY KEY (stream_id, session, sequence)
) WITHOUT ROWID;
INSERT INTO frames_by_session (stream_id, sequence, received_ms, capture_time_ms, task, result,
    session, digest, request_id)
SELECT stream_id, sequence, received_ms, capture_time_ms, task, result, session, digest,
    request_id FROM frames;
DROP TABLE frames;
ALTER TABLE frames_by_session RENAME TO frames;
CREATE INDEX frames_received ON frames (received_ms);
-- Retention by count keeps a stream's newest arrivals, whatever their session.
CREATE INDEX frames_by_arrival ON frames (stream_id, received_ms, session, sequence);
