-- The stream listing sorts by last activity and retention scans it: index it.
CREATE INDEX IF NOT EXISTS streams_last_seen ON streams (last_seen_ms);
