-- The device registry belongs to the product (docs/device-registry.md).
--
-- device_enrolments (owner: device_registry/): every device the product was told about, with
--   the PIN on record (encrypted) and, once taken out of service, when and by whom.
-- device_sightings (owner: device_gateway/): every device a gateway found on its buses, enrolled
--   or not, and which PIN revision the device last refused (never sent again).
-- devices (rows: device_registry/; state columns: the gateway; last_result: the coordinator):
--   one row for each enrolled device in service, so every reader of `devices` sees exactly the
--   devices the product drives. Retiring a device deletes its row; its clears, backups and
--   audit records stay in their own tables.

CREATE TABLE IF NOT EXISTS device_enrolments (
    device_id     text PRIMARY KEY,
    family        text NOT NULL,
    taxpayer_id   text NOT NULL,
    branch_id     text NOT NULL,
    machine_no    integer NOT NULL DEFAULT 0,
    pin_cipher    bytea,                       -- the certificate PIN on record, encrypted (never logged)
    pin_revision  integer NOT NULL DEFAULT 0,  -- bumped by every PIN recorded; 0 = none yet
    source        text NOT NULL,               -- fleet | import | console | migration
    enrolled_by   text NOT NULL,
    enrolled_at   timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    retired_at    timestamptz,
    retired_by    text
);
CREATE INDEX IF NOT EXISTS device_enrolments_branch ON device_enrolments (branch_id);

CREATE TABLE IF NOT EXISTS device_sightings (
    device_id             text PRIMARY KEY,     -- the device's USB serial string
    gateway_id            text NOT NULL,
    family                text NOT NULL,        -- from the USB ids the gateway's drivers know
    online                boolean NOT NULL DEFAULT false,
    first_seen            timestamptz NOT NULL DEFAULT now(),
    last_seen             timestamptz,
    pin_refused_revision  integer               -- the PIN revision this device refused
);
CREATE INDEX IF NOT EXISTS device_sightings_gateway ON device_sightings (gateway_id);

-- What existed so far was enrolled by the fleet file; the device's memory of a refused PIN
-- was kept for the one PIN on record (it never changed), which becomes revision 1.
INSERT INTO device_enrolments (device_id, family, taxpayer_id, branch_id, machine_no, pin_cipher,
                               pin_revision, source, enrolled_by)
SELECT device_id, family, taxpayer_id, branch_id, machine_no, pin_cipher,
       CASE WHEN pin_cipher IS NULL THEN 0 ELSE 1 END, 'migration', 'migration'
FROM devices
ON CONFLICT (device_id) DO NOTHING;

INSERT INTO device_sightings (device_id, gateway_id, family, online, last_seen, pin_refused_revision)
SELECT device_id, gateway_id, family, online, last_seen,
       CASE WHEN pin_failed_hash IS NULL THEN NULL ELSE 1 END
FROM devices
ON CONFLICT (device_id) DO NOTHING;

-- an enrolled device no gateway has seen yet has no gateway
ALTER TABLE devices ALTER COLUMN gateway_id DROP NOT NULL;
-- the PIN lives in the registry only, the refused-PIN memory with the gateway
ALTER TABLE devices DROP COLUMN IF EXISTS pin_cipher;
ALTER TABLE devices DROP COLUMN IF EXISTS pin_failed_hash;
