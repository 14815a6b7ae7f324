-- New PENDING tasks are counted by the statement that inserts them, one UPSERT per account and key of the
-- batch (see sqlite_007.sql); the trigger keeps status changes and deletes.
DROP TRIGGER tasks_pending_counts ON tasks;
CREATE TRIGGER tasks_pending_counts AFTER DELETE OR UPDATE OF status ON tasks
    FOR EACH ROW EXECUTE FUNCTION videosynth_pending_counts()
;
-- Counted afresh from the tasks: exact whatever an earlier version's replicas did to the counters. API
-- replicas of schema 6 count nothing from here on, so every replica is upgraded together (README).
DELETE FROM pending_counts;
INSERT INTO pending_counts (scope, n)
    SELECT 'a:' || account_id, count(*) FROM tasks WHERE status = 'PENDING' GROUP BY account_id;
INSERT INTO pending_counts (scope, n)
    SELECT 'k:' || api_key_id, count(*) FROM tasks WHERE status = 'PENDING' GROUP BY api_key_id
