-- Schema 8: push instead of poll. Every status change a client may be told about is an event, written by a
-- trigger in the statement that changes the status (no change without its event, whoever changes it), with
-- one delivery per endpoint that wants it: the account's webhooks and the task's own callback URL. An event row
-- is small: what it says about its task is the task's row (a finished task's row changes no more; a running
-- event's task is read as it was when it started to run: sqlstore.as_of_event).
ALTER TABLE tasks ADD COLUMN callback_url TEXT;
CREATE TABLE task_events (
    seq BIGSERIAL PRIMARY KEY,
    account_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX task_events_account ON task_events (account_id, seq);
CREATE INDEX task_events_task ON task_events (task_id, seq);
CREATE TABLE webhooks (
    webhook_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    url TEXT NOT NULL,
    -- ',running,succeeded,': one kind is one position() away
    events TEXT NOT NULL,
    format TEXT NOT NULL,
    include_result INTEGER NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX webhooks_account ON webhooks (account_id);
CREATE TABLE webhook_secrets (
    account_id TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_until_ms BIGINT
);
-- target: the webhook's id, or '' for the task's callback URL; one task's deliveries to one target go out in
-- seq order.
CREATE TABLE deliveries (
    delivery_id TEXT PRIMARY KEY,
    event_seq BIGINT NOT NULL,
    account_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    target TEXT NOT NULL,
    url TEXT NOT NULL,
    format TEXT NOT NULL,
    include_result INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    tries INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT,
    created_ms BIGINT NOT NULL,
    claimed_by TEXT,
    lease_until_ms BIGINT
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_ms) WHERE state = 'pending';
CREATE INDEX deliveries_task ON deliveries (task_id, target, event_seq);
CREATE TABLE delivery_attempts (
    delivery_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    started_ms BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    status_code INTEGER,
    error TEXT,
    PRIMARY KEY (delivery_id, attempt)
);
CREATE FUNCTION videosynth_task_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    event_seq BIGINT;
    kind TEXT := lower(NEW.status);
    now_ms BIGINT := (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT;
BEGIN
    -- Held to the commit: one account's events commit in seq order, so a reader resuming after a seq never
    -- skips one that committed later with a smaller seq. (Lock space 0x76690004, sqlstore's EVENTS_LOCK_SPACE.)
    PERFORM pg_advisory_xact_lock(1986592772, hashtext(NEW.account_id));
    INSERT INTO task_events (account_id, task_id, kind, created_ms)
        VALUES (NEW.account_id, NEW.task_id, kind, now_ms)
        RETURNING seq INTO event_seq;
    INSERT INTO deliveries (delivery_id, event_seq, account_id, task_id, target, url, format, include_result,
        state, next_attempt_ms, created_ms)
    SELECT 'msg_' || replace(gen_random_uuid()::TEXT, '-', ''), event_seq, NEW.account_id, NEW.task_id,
        t.target, t.url, t.format, t.include_result, 'pending', now_ms, now_ms
    FROM (
        SELECT w.webhook_id AS target, w.url AS url, w.format AS format, w.include_result AS include_result
        FROM webhooks w WHERE w.account_id = NEW.account_id AND position(',' || kind || ',' IN w.events) > 0
        UNION ALL
        SELECT '', NEW.callback_url, 'standard', 0 WHERE NEW.callback_url IS NOT NULL
    ) t;
    RETURN NULL;
END
$$;
CREATE TRIGGER tasks_events AFTER UPDATE OF status ON tasks FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status AND NEW.status IN ('RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELED'))
    EXECUTE FUNCTION videosynth_task_events()
