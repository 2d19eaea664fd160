-- The audit log: append-only and hash-chained. Each row's hash covers its seq, its fields and the
-- previous row's hash, so a rewritten, removed or reordered row breaks the chain; the head is
-- also anchored in a signed checkpoint file outside the database (services/audit/checkpoint.py).

CREATE TABLE IF NOT EXISTS audit_log (
    seq         bigint PRIMARY KEY CHECK (seq > 0),
    record_id   text NOT NULL UNIQUE,
    at          timestamptz NOT NULL,
    service     text NOT NULL,
    subject     text NOT NULL,
    action      text NOT NULL,
    request_id  text,
    device_id   text,
    branch_id   text,
    outcome     text,
    error_code  text,
    trace_id    text,
    detail      json NOT NULL,          -- json, not jsonb: the exact text that was hashed is kept
    prev_hash   text NOT NULL,
    hash        text NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS audit_log_request ON audit_log (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_log_device ON audit_log (device_id) WHERE device_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_log_branch ON audit_log (branch_id) WHERE branch_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_log_subject ON audit_log (subject);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at);

CREATE OR REPLACE FUNCTION audit_log_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

DROP TRIGGER IF EXISTS audit_log_no_update_delete ON audit_log;
CREATE TRIGGER audit_log_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();

DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log;
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();
