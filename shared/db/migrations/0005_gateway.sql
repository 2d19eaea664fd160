-- Device gateway: the fingerprint of a PIN on record the device refused (never retried), and
-- the device's count of offline invoices not yet uploaded.

ALTER TABLE devices ADD COLUMN IF NOT EXISTS pin_failed_hash text;
ALTER TABLE devices ADD COLUMN IF NOT EXISTS offline_pending integer;
