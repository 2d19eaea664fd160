-- Backups of a device's period: encrypted files named by content, one copy per location.
-- A row exists only for a backup whose every copy was written and read back intact.

CREATE TABLE IF NOT EXISTS backups (
    backup_id     text PRIMARY KEY,
    device_id     text NOT NULL,
    taxpayer_id   text NOT NULL,
    machine_no    integer NOT NULL,
    family        text NOT NULL,
    period        text NOT NULL,
    request_id    text NOT NULL,
    taken_at      timestamptz NOT NULL,
    size          bigint NOT NULL,
    checksum      text NOT NULL,           -- SHA-256 of the stored (encrypted) bytes
    key_id        text NOT NULL,           -- the encryption key, also in the file header
    file_name     text NOT NULL,           -- <device_id>/<checksum>.ccbk under each location
    locations     text[] NOT NULL,
    UNIQUE (request_id, device_id)
);
CREATE INDEX IF NOT EXISTS backups_device_period ON backups (device_id, period, taken_at DESC);
