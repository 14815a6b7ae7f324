-- Schema 2: tasks record failures and results in the domain's terms; each API dialect words them.
-- Schema 1 stored the DashScope code and message of a failure (error_code, error_message) and the
-- DashScope usage object. Those rows keep their wording in legacy_* columns until retention purges them.
ALTER TABLE tasks ADD COLUMN error_kind TEXT;
ALTER TABLE tasks ADD COLUMN error_detail TEXT;
ALTER TABLE tasks ADD COLUMN video_duration_ms BIGINT;
-- Schema 1 always produced exactly the requested duration.
UPDATE tasks SET video_duration_ms = (params::json ->> 'duration')::bigint * 1000 WHERE status = 'SUCCEEDED';
ALTER TABLE tasks RENAME COLUMN error_code TO legacy_error_code;
ALTER TABLE tasks RENAME COLUMN error_message TO legacy_error_message;
ALTER TABLE tasks DROP COLUMN usage;
ALTER TABLE tasks DROP COLUMN extra
