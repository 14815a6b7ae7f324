-- Schema 6: what a shared server needs to keep its users apart.
-- A client's Idempotency-Key, per account, with the fingerprint of the request it was first used for and the task
-- that request created; written in the transaction that creates the task.
CREATE TABLE idempotency_keys (
    account_id TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    task_id TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (account_id, idem_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_ms);
-- Limits: an account's, and a key's own overrides of them. NULL inherits (key -> account -> server default);
-- 0 switches a limit off.
ALTER TABLE accounts ADD COLUMN submit_rps BIGINT;
ALTER TABLE accounts ADD COLUMN query_rps BIGINT;
ALTER TABLE accounts ADD COLUMN max_queued BIGINT;
ALTER TABLE accounts ADD COLUMN max_stored_mb BIGINT;
ALTER TABLE api_keys ADD COLUMN submit_rps BIGINT;
ALTER TABLE api_keys ADD COLUMN query_rps BIGINT;
ALTER TABLE api_keys ADD COLUMN max_queued BIGINT;
ALTER TABLE api_keys ADD COLUMN max_stored_mb BIGINT;
-- Request rates: one row per limited scope (an account or a key, and what it does), counting the current
-- one-second window. Shared by every API replica on the store; each replica takes several units at a time.
CREATE TABLE rate_windows (
    scope TEXT PRIMARY KEY,
    window_s BIGINT NOT NULL,
    used BIGINT NOT NULL
);
-- Bytes this server keeps for a client: data: references (kept while their task waits or runs) and uploads
-- (kept until they expire).
CREATE TABLE stored_inputs (
    object_key TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    api_key_id TEXT,
    task_id TEXT,
    bytes BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX stored_inputs_account ON stored_inputs (account_id, expires_ms);
CREATE INDEX stored_inputs_expires ON stored_inputs (expires_ms);
-- Queue caps set on a key count its own waiting tasks.
CREATE INDEX tasks_key_status ON tasks (api_key_id, status)
;
-- PENDING tasks per account ('a:<id>') and per key ('k:<id>'), kept by a trigger in the transaction that
-- changes a task, so a queue cap reads one row instead of counting a backlog of any size.
CREATE TABLE pending_counts (
    scope TEXT PRIMARY KEY,
    n BIGINT NOT NULL
);
INSERT INTO pending_counts (scope, n)
    SELECT 'a:' || account_id, count(*) FROM tasks WHERE status = 'PENDING' GROUP BY account_id;
INSERT INTO pending_counts (scope, n)
    SELECT 'k:' || api_key_id, count(*) FROM tasks WHERE status = 'PENDING' GROUP BY api_key_id;
CREATE FUNCTION videosynth_pending_counts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status = 'PENDING' THEN
            INSERT INTO pending_counts (scope, n) VALUES ('a:' || NEW.account_id, 1), ('k:' || NEW.api_key_id, 1)
                ON CONFLICT (scope) DO UPDATE SET n = pending_counts.n + 1;
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        IF OLD.status = 'PENDING' THEN
            UPDATE pending_counts SET n = n - 1 WHERE scope IN ('a:' || OLD.account_id, 'k:' || OLD.api_key_id);
        END IF;
    ELSIF OLD.status = 'PENDING' AND NEW.status <> 'PENDING' THEN
        UPDATE pending_counts SET n = n - 1 WHERE scope IN ('a:' || OLD.account_id, 'k:' || OLD.api_key_id);
    ELSIF NEW.status = 'PENDING' AND OLD.status <> 'PENDING' THEN
        INSERT INTO pending_counts (scope, n) VALUES ('a:' || NEW.account_id, 1), ('k:' || NEW.api_key_id, 1)
            ON CONFLICT (scope) DO UPDATE SET n = pending_counts.n + 1;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER tasks_pending_counts AFTER INSERT OR DELETE OR UPDATE OF status ON tasks
    FOR EACH ROW EXECUTE FUNCTION videosynth_pending_counts()
