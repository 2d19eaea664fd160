-- Notifications: who is responsible for a branch, and every notification sent (dedupe key).

CREATE TABLE IF NOT EXISTS branch_contacts (
    branch_id   text NOT NULL,            -- '*' = every branch
    kind        text NOT NULL CHECK (kind IN ('email', 'webhook')),
    address     text NOT NULL,            -- an email address or an http(s) URL
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (branch_id, kind, address)
);

CREATE TABLE IF NOT EXISTS notifications_sent (
    dedupe_key  text PRIMARY KEY,         -- one notification, one channel, one recipient
    branch_id   text NOT NULL,
    kind        text NOT NULL,
    address     text NOT NULL,
    subject     text NOT NULL,
    state       text NOT NULL DEFAULT 'sending',  -- sending | sent
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz
);
