-- The bureau simulator's state (services/authority_sim). A real bureau connector keeps its own.

CREATE TABLE IF NOT EXISTS authority_clock (
    id            boolean PRIMARY KEY DEFAULT true CHECK (id),
    fleet_clock   text,                       -- the fleet file's clock (ISO 8601 with offset) or NULL = real time
    started_at    timestamptz NOT NULL        -- real time when the simulator first started
);

-- Declaration (纳税申报) and comparison (一窗式比对) of each fleet device, seeded from the fleet file.
CREATE TABLE IF NOT EXISTS authority_taxpayers (
    device_id     text PRIMARY KEY,
    taxpayer_id   text NOT NULL,
    machine_no    integer NOT NULL,
    family        text NOT NULL,
    branch_id     text NOT NULL,
    period        text NOT NULL,              -- the period the fleet's declared/comparison apply to
    declared      boolean NOT NULL,
    comparison    text NOT NULL CHECK (comparison IN ('pass', 'fail')),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS authority_offline_invoices (
    device_id     text NOT NULL,
    taxpayer_id   text NOT NULL,
    period        text NOT NULL,
    invoice_type  text NOT NULL,
    code          text NOT NULL,
    number        text NOT NULL,
    invoice       jsonb NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, invoice_type, code, number)
);

CREATE TABLE IF NOT EXISTS authority_reports (
    device_id     text NOT NULL,
    taxpayer_id   text NOT NULL,
    machine_no    integer NOT NULL,
    period        text NOT NULL,
    invoice_type  text NOT NULL,
    summary       jsonb NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, period, invoice_type)
);

CREATE TABLE IF NOT EXISTS authority_packages (
    package_id     text PRIMARY KEY,
    device_id      text NOT NULL,
    taxpayer_id    text NOT NULL,
    machine_no     integer NOT NULL,
    period         text NOT NULL,
    invoice_types  text[] NOT NULL,
    challenge      text NOT NULL,
    issued_at      text NOT NULL,             -- bureau time as issued (ISO 8601 with offset)
    next_lock_date date NOT NULL,
    clock_block    text,
    checksum       text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS authority_packages_device ON authority_packages (device_id, period);

-- Fault injection for tests and drills: the next `remaining` calls of `op` ('*' = any) fail.
CREATE TABLE IF NOT EXISTS authority_faults (
    op            text PRIMARY KEY,
    remaining     integer NOT NULL CHECK (remaining >= 0),
    code          text NOT NULL DEFAULT 'AUTHORITY_UNAVAILABLE'
);
