-- Notifications exactly once: a claim that was not marked sent within the claim timeout (its
-- sender died) may be taken again; `attempts` counts the claims.

ALTER TABLE notifications_sent ADD COLUMN IF NOT EXISTS claimed_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE notifications_sent ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 1;
