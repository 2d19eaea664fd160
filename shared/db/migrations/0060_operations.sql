-- Issue 16 (operations): the bureau's view beside each device, a pending comparison in the
-- bureau simulator, each device's latest report date, metrics recorded by their owners,
-- notification preferences and signed webhooks.

-- The bureau simulator: a comparison may be pending for a while after the report.
ALTER TABLE authority_taxpayers DROP CONSTRAINT IF EXISTS authority_taxpayers_comparison_check;
ALTER TABLE authority_taxpayers ADD CONSTRAINT authority_taxpayers_comparison_check
    CHECK (comparison IN ('pass', 'fail', 'pending'));
ALTER TABLE authority_taxpayers ADD COLUMN IF NOT EXISTS pending_minutes integer;

-- The gateway records the device's latest report date (最新报税日期) from its monitoring data:
-- a device not reported for ~90 days is abandoned.
ALTER TABLE devices ADD COLUMN IF NOT EXISTS latest_report_date date;

-- What the bureau said about a device's period (filing and comparison), owned by the
-- coordinator: recorded when a clear asks the bureau, and refreshed on a schedule by the
-- coordinator leader, so status views never call the bureau per device per page view.
CREATE TABLE IF NOT EXISTS bureau_views (
    device_id    text NOT NULL,
    period       text NOT NULL,
    filing       text NOT NULL CHECK (filing IN ('filed', 'not_filed', 'unknown')),
    comparison   text NOT NULL CHECK (comparison IN ('pass', 'fail', 'pending', 'unknown')),
    source       text NOT NULL,            -- clear | refresh
    checked_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, period)
);
CREATE INDEX IF NOT EXISTS bureau_views_checked ON bureau_views (checked_at);

-- Metric series recorded by each serving process (cumulative values of its own counters and
-- histograms); the console's /metrics sums them over processes. process = 'retired' holds the
-- folded totals of processes that stopped, so counters never go backwards.
CREATE TABLE IF NOT EXISTS metric_series (
    process     text NOT NULL,
    sample      text NOT NULL,             -- sample name, e.g. clearcard_device_clears_total
    labels      jsonb NOT NULL DEFAULT '{}',
    value       double precision NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (process, sample, labels)
);
CREATE INDEX IF NOT EXISTS metric_series_updated ON metric_series (process, updated_at);

-- Notifications: per branch, whether successful clears are told too (a summary per request),
-- and a secret per webhook endpoint for its HMAC signature.
CREATE TABLE IF NOT EXISTS branch_notify_settings (
    branch_id   text PRIMARY KEY,          -- '*' = the default for every branch
    summaries   text NOT NULL DEFAULT 'all' CHECK (summaries IN ('all', 'problems', 'none')),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE branch_contacts ADD COLUMN IF NOT EXISTS secret_cipher bytea;
