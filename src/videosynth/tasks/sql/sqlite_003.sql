-- Schema 3: fair claims. The claim walks the accounts that have PENDING tasks (one index probe per
-- account, however long one account's backlog), and orders them by when each was last served.
CREATE INDEX IF NOT EXISTS tasks_pending_account ON tasks (status, account_id, submit_time_ms, task_id);
CREATE INDEX IF NOT EXISTS tasks_account_scheduled ON tasks (account_id, scheduled_time_ms);
