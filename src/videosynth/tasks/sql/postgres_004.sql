-- Schema 4: what a RUNNING task is doing, for polling clients: percent done (never decreasing) and stage.
ALTER TABLE tasks ADD COLUMN progress INTEGER;
ALTER TABLE tasks ADD COLUMN stage TEXT
