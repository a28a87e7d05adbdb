-- A frame is keyed by (stream, session, sequence): a rebooted device counts from 0 again
-- in a new session, and its earlier sessions' frames stay stored beside the new ones
-- (they used to be deleted). Every row is kept: the old key's rows are unique under the
-- new one too.
ALTER TABLE frames DROP CONSTRAINT frames_pkey;
ALTER TABLE frames ADD PRIMARY KEY (stream_id, session, sequence);
-- Retention by count keeps a stream's newest arrivals, whatever their session.
CREATE INDEX IF NOT EXISTS frames_by_arrival ON frames (stream_id, received_ms, session, sequence);
