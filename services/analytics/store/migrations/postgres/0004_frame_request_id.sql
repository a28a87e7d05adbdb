-- The request id a frame was processed under (the client's, checked, or a generated one):
-- what ties a stored result to the edge client's and the service's log lines.
-- Frames stored before this version have none.
ALTER TABLE frames ADD COLUMN request_id TEXT;
