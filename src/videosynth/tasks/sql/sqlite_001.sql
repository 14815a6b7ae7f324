CREATE TABLE IF NOT EXISTS accounts (
    account_id   TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    created_ms   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id       TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts(account_id),
    name         TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    revoked_ms   INTEGER
);
CREATE TABLE IF NOT EXISTS secrets (
    name         TEXT PRIMARY KEY,
    value        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    task_id            TEXT PRIMARY KEY,
    account_id         TEXT NOT NULL,
    api_key_id         TEXT NOT NULL,
    request_id         TEXT NOT NULL,
    model              TEXT NOT NULL,
    engine             TEXT NOT NULL,
    prompt             TEXT NOT NULL,
    params             TEXT NOT NULL,
    status             TEXT NOT NULL,
    submit_time_ms     INTEGER NOT NULL,
    scheduled_time_ms  INTEGER,
    end_time_ms        INTEGER,
    error_code         TEXT,
    error_message      TEXT,
    result_key         TEXT,
    usage              TEXT,
    worker_id          TEXT,
    lease_expires_ms   INTEGER,
    attempts           INTEGER NOT NULL DEFAULT 0,
    cancel_requested   INTEGER NOT NULL DEFAULT 0,
    extra              TEXT NOT NULL DEFAULT '{}'
);
-- Media URLs (data: URLs can be tens of MB) live apart so polling never reads them.
CREATE TABLE IF NOT EXISTS task_media (
    task_id      TEXT NOT NULL,
    position     INTEGER NOT NULL,
    url          TEXT NOT NULL,
    PRIMARY KEY (task_id, position)
);
-- The claim reads only PENDING rows in submit order; keep it an index range scan (stack.md pitfall 6).
CREATE INDEX IF NOT EXISTS tasks_status_submit ON tasks (status, submit_time_ms);
CREATE INDEX IF NOT EXISTS tasks_account_submit ON tasks (account_id, submit_time_ms);
-- Fair share counts an account's RUNNING tasks at every claim.
CREATE INDEX IF NOT EXISTS tasks_account_status ON tasks (account_id, status);
