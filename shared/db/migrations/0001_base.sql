-- Base schema: device registry, clear requests and their per-device progress, inbox, outbox.

CREATE TABLE IF NOT EXISTS devices (
    device_id       text PRIMARY KEY,
    family          text NOT NULL,
    taxpayer_id     text NOT NULL,
    branch_id       text NOT NULL,
    machine_no      integer NOT NULL DEFAULT 0,
    gateway_id      text NOT NULL,
    invoice_types   text[] NOT NULL DEFAULT '{}',
    type_status     jsonb NOT NULL DEFAULT '{}',   -- type code -> 0 needs report, 1 reported, 2 cleared
    open_period     text,
    lock_date       date,
    pin_tries_left  integer,
    pin_cipher      bytea,                          -- the PIN on record, encrypted (never logged)
    online          boolean NOT NULL DEFAULT false,
    last_seen       timestamptz,
    last_result     text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS devices_branch ON devices (branch_id);

CREATE TABLE IF NOT EXISTS clear_requests (
    request_id      text PRIMARY KEY,
    branch_id       text NOT NULL,
    period          text NOT NULL,
    mode            text NOT NULL,
    invoice_types   text[] NOT NULL DEFAULT '{}',
    subject         text NOT NULL,
    trace_id        text NOT NULL,
    traceparent     text,
    reply_to        text,
    correlation_id  text,
    status          text NOT NULL DEFAULT 'running',   -- running | finished
    finished_event  jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE INDEX IF NOT EXISTS clear_requests_running ON clear_requests (status) WHERE status = 'running';

CREATE TABLE IF NOT EXISTS device_clears (
    request_id      text NOT NULL REFERENCES clear_requests (request_id),
    device_id       text NOT NULL,
    step            text NOT NULL,          -- last step reached (contract §3 step names)
    outcome         text,                   -- null while running
    error_code      text,
    error_message   text,
    backup_id       text,
    state           jsonb NOT NULL DEFAULT '{}',   -- what later steps need (types to clear, summaries)
    lease_owner     text,
    lease_until     timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, device_id)
);
CREATE INDEX IF NOT EXISTS device_clears_open ON device_clears (device_id) WHERE outcome IS NULL;

CREATE TABLE IF NOT EXISTS inbox (
    consumer        text NOT NULL,
    message_id      text NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

CREATE TABLE IF NOT EXISTS outbox (
    id              bigserial PRIMARY KEY,
    exchange        text NOT NULL,
    routing_key     text NOT NULL,
    body            bytea NOT NULL,
    message_id      text NOT NULL,
    headers         jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
