-- The console's month at a glance and period reports select a period's clear requests.
CREATE INDEX IF NOT EXISTS clear_requests_period ON clear_requests (period, branch_id);
