-- Schema 8: push instead of poll. Every status change a client may be told about is an event, written by a
-- trigger in the statement that changes the status (no change without its event, whoever changes it), with
-- one delivery per endpoint that wants it: the account's webhooks and the task's own callback URL. An event row
-- is small: what it says about its task is the task's row (a finished task's row changes no more; a running
-- event's task is read as it was when it started to run: sqlstore.as_of_event).
ALTER TABLE tasks ADD COLUMN callback_url TEXT;
-- AUTOINCREMENT: a seq is never used twice, even after the newest events were purged (clients resume by it).
CREATE TABLE task_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX task_events_account ON task_events (account_id, seq);
CREATE INDEX task_events_task ON task_events (task_id, seq);
CREATE TABLE webhooks (
    webhook_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    url TEXT NOT NULL,
    -- ',running,succeeded,': one kind is one instr() away
    events TEXT NOT NULL,
    format TEXT NOT NULL,
    include_result INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX webhooks_account ON webhooks (account_id);
CREATE TABLE webhook_secrets (
    account_id TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_until_ms INTEGER
);
-- target: the webhook's id, or '' for the task's callback URL; one task's deliveries to one target go out in
-- seq order.
CREATE TABLE deliveries (
    delivery_id TEXT PRIMARY KEY,
    event_seq INTEGER NOT NULL,
    account_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    target TEXT NOT NULL,
    url TEXT NOT NULL,
    format TEXT NOT NULL,
    include_result INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    tries INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER,
    created_ms INTEGER NOT NULL,
    claimed_by TEXT,
    lease_until_ms INTEGER
-- Rows live in their primary key's tree: one tree fewer to write at every event.
) WITHOUT ROWID;
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_ms);
CREATE INDEX deliveries_task ON deliveries (task_id, target, event_seq);
CREATE TABLE delivery_attempts (
    delivery_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    started_ms INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    status_code INTEGER,
    error TEXT,
    PRIMARY KEY (delivery_id, attempt)
);
CREATE TRIGGER tasks_events AFTER UPDATE OF status ON tasks
    WHEN NEW.status <> OLD.status AND NEW.status IN ('RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELED')
BEGIN
    INSERT INTO task_events (account_id, task_id, kind, created_ms)
        VALUES (NEW.account_id, NEW.task_id, lower(NEW.status), CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
    INSERT INTO deliveries (delivery_id, event_seq, account_id, task_id, target, url, format, include_result,
        state, next_attempt_ms, created_ms)
    SELECT 'msg_' || lower(hex(randomblob(12))),
        (SELECT max(e.seq) FROM task_events e WHERE e.task_id = NEW.task_id),
        NEW.account_id, NEW.task_id, t.target, t.url, t.format, t.include_result, 'pending',
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
    FROM (
        SELECT w.webhook_id AS target, w.url AS url, w.format AS format, w.include_result AS include_result
        FROM webhooks w WHERE w.account_id = NEW.account_id AND instr(w.events, ',' || lower(NEW.status) || ',') > 0
        UNION ALL
        SELECT '', NEW.callback_url, 'standard', 0 WHERE NEW.callback_url IS NOT NULL
    ) t;
END
