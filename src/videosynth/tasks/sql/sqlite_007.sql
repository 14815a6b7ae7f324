-- New PENDING tasks are counted by the transaction that inserts them, one UPSERT per account and key of the
-- batch (sqlstore.count_new_pending), instead of a trigger firing two UPSERTs per row: under load a batch
-- holds tens of tasks, and the per-row trigger was most of the writer's time beyond the inserts themselves.
-- Status changes and deletes stay with their triggers.
DROP TRIGGER tasks_pending_insert
;
-- Counted afresh from the tasks: exact whatever an earlier version's replicas did to the counters. API
-- replicas of schema 6 count nothing from here on, so every replica is upgraded together (README).
DELETE FROM pending_counts;
INSERT INTO pending_counts (scope, n)
    SELECT 'a:' || account_id, count(*) FROM tasks WHERE status = 'PENDING' GROUP BY account_id;
INSERT INTO pending_counts (scope, n)
    SELECT 'k:' || api_key_id, count(*) FROM tasks WHERE status = 'PENDING' GROUP BY api_key_id
