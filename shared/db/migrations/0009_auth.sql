-- Auth: people and service accounts, one-time password reset tokens, and token revocations.

CREATE TABLE IF NOT EXISTS auth_accounts (
    username        text PRIMARY KEY CHECK (username ~ '^[A-Za-z0-9._@-]{1,64}$'),
    kind            text NOT NULL CHECK (kind IN ('person', 'service')),
    role            text NOT NULL CHECK (role IN ('admin', 'operator', 'requester', 'auditor', 'viewer')),
    branches        text[] NOT NULL CHECK (cardinality(branches) > 0),
    password_hash   text,                         -- argon2id; null until a password is set
    totp_secret     text,                         -- base32; null until enrolled
    totp_last_step  bigint,                       -- last accepted TOTP time step (no replay)
    disabled        boolean NOT NULL DEFAULT false,
    failed_logins   integer NOT NULL DEFAULT 0,   -- consecutive failures since the last success
    locked_until    timestamptz,                  -- 'infinity' = until an admin unlocks
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS auth_reset_tokens (
    token_hash      text PRIMARY KEY,             -- sha256 of the one-time token; the token is never stored
    username        text NOT NULL REFERENCES auth_accounts (username) ON DELETE CASCADE,
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- One row per revocation: a single token (jti) or every token of a subject issued before a time.
-- Services verify tokens locally and learn revocations by reading rows with id > the last seen.
CREATE TABLE IF NOT EXISTS auth_revocations (
    id              bigserial PRIMARY KEY,
    jti             text,
    subject         text,
    issued_before_ms bigint,                      -- subject revocations: tokens issued before this (ms)
    expires_at      timestamptz,                  -- a jti row is useless after the token expired
    reason          text NOT NULL,
    revoked_by      text NOT NULL,
    revoked_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((jti IS NOT NULL) OR (subject IS NOT NULL AND issued_before_ms IS NOT NULL))
);
CREATE UNIQUE INDEX IF NOT EXISTS auth_revocations_jti ON auth_revocations (jti) WHERE jti IS NOT NULL;
