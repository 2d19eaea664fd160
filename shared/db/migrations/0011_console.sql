-- Fully digital e-invoices (数电发票): taxpayers with no device whose only monthly step is the
-- summary confirmation (count, amount and tax of blue and red invoices). The console shows them
-- beside device clears; `services/console/digital.py` reads, simulates and confirms them.

CREATE TABLE IF NOT EXISTS digital_taxpayers (
    taxpayer_id   text PRIMARY KEY,            -- 18-character unified social credit code
    name          text NOT NULL,
    branch_id     text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS digital_taxpayers_branch ON digital_taxpayers (branch_id);

CREATE TABLE IF NOT EXISTS digital_confirmations (
    taxpayer_id   text NOT NULL REFERENCES digital_taxpayers (taxpayer_id),
    period        text NOT NULL,               -- YYYY-MM, the closed month being confirmed
    blue_count    integer NOT NULL CHECK (blue_count >= 0),
    blue_amount   numeric(18, 2) NOT NULL,     -- yuan, excluding tax
    blue_tax      numeric(18, 2) NOT NULL,
    red_count     integer NOT NULL CHECK (red_count >= 0),
    red_amount    numeric(18, 2) NOT NULL,     -- red (negative) invoices, as negative amounts
    red_tax       numeric(18, 2) NOT NULL,
    deadline      date NOT NULL,               -- confirm by this day (the period's filing deadline)
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'confirmed')),
    confirmed_by  text,
    confirmed_at  timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (taxpayer_id, period)
);
CREATE INDEX IF NOT EXISTS digital_confirmations_pending ON digital_confirmations (deadline)
    WHERE status = 'pending';
