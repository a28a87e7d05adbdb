-- A frame's session (the device's boot epoch: sequences restart at 0 in a new one) and
-- the SHA-256 of its bitstream (same key, other content is refused, never answered stale).
-- Frames stored before this version have the empty session and no digest.
ALTER TABLE frames ADD COLUMN session TEXT NOT NULL DEFAULT '';
ALTER TABLE frames ADD COLUMN digest TEXT;
ALTER TABLE streams ADD COLUMN session TEXT NOT NULL DEFAULT '';
