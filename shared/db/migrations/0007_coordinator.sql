-- Coordinator: outbox ordering and idempotent staging, cancellation, fleet operations, scheduler.

ALTER TABLE outbox ADD COLUMN IF NOT EXISTS ordering_key text NOT NULL DEFAULT '';
CREATE UNIQUE INDEX IF NOT EXISTS outbox_message_id ON outbox (message_id);

ALTER TABLE clear_requests ADD COLUMN IF NOT EXISTS cancelled boolean NOT NULL DEFAULT false;
ALTER TABLE clear_requests ADD COLUMN IF NOT EXISTS fleet_id text;
CREATE INDEX IF NOT EXISTS clear_requests_fleet ON clear_requests (fleet_id) WHERE fleet_id IS NOT NULL;

-- set once the write-back step began: a cancel no longer skips that device (no undo)
ALTER TABLE device_clears ADD COLUMN IF NOT EXISTS writeback_started boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS device_clears_device ON device_clears (device_id, updated_at);

CREATE TABLE IF NOT EXISTS fleet_operations (
    fleet_id        text PRIMARY KEY,
    subject         text NOT NULL,
    filters         jsonb NOT NULL DEFAULT '{}',
    request_ids     text[] NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- one row per scheduler round of a period: the window opening (round 0) and each retry round
CREATE TABLE IF NOT EXISTS schedule_rounds (
    period          text NOT NULL,
    round           integer NOT NULL,
    fleet_id        text NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (period, round)
);
