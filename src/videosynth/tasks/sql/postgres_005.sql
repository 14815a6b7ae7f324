-- Schema 5: relayed tasks. What a relay engine needs to resume a task after a restart (its upstream's task id,
-- never shown to clients), and the upstream's own error code of a relayed failure.
ALTER TABLE tasks ADD COLUMN engine_state TEXT;
ALTER TABLE tasks ADD COLUMN upstream_code TEXT
