-- Sending (issue 4): the outbound queue, the template registry, the send workers' reports, and
-- the echo of our own reference on statuses. Why and how: the Postgres migration of the same
-- name (0006_sending.sql).
CREATE TABLE outbound_messages (
    id                       INTEGER PRIMARY KEY AUTOINCREMENT,
    business_phone_number_id TEXT NOT NULL,
    idempotency_key          TEXT NOT NULL,
    request_digest           TEXT NOT NULL,
    recipient                TEXT NOT NULL,
    type                     TEXT NOT NULL,
    template_name            TEXT,
    template_language        TEXT,
    preview                  TEXT,
    payload                  TEXT NOT NULL,
    fallback_json            TEXT,
    state                    TEXT NOT NULL,
    attempts                 INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms       INTEGER NOT NULL,
    queued_at_ms             INTEGER NOT NULL,
    claim_token              INTEGER,
    claimed_by               TEXT,
    lease_until_ms           INTEGER,
    in_doubt_since_ms        INTEGER,
    wamid                    TEXT,
    accepted_at_ms           INTEGER,
    error_code               INTEGER,
    error_json               TEXT,
    traceparent              TEXT,
    tracestate               TEXT,
    UNIQUE (business_phone_number_id, idempotency_key)
);
CREATE INDEX outbound_queued ON outbound_messages (next_attempt_at_ms, id) WHERE state = 'queued';
CREATE INDEX outbound_unsettled ON outbound_messages (state, lease_until_ms)
    WHERE state IN ('sending', 'in_doubt');
CREATE INDEX outbound_dead ON outbound_messages (id) WHERE state = 'dead';

CREATE TABLE templates (
    waba_id                    TEXT NOT NULL,
    name                       TEXT NOT NULL,
    language                   TEXT NOT NULL,
    category                   TEXT NOT NULL,
    status                     TEXT NOT NULL,
    components_json            TEXT NOT NULL,
    fallback_template_name     TEXT,
    fallback_template_language TEXT,
    fallback_text              TEXT,
    created_at_ms              INTEGER NOT NULL,
    updated_at_ms              INTEGER NOT NULL,
    PRIMARY KEY (waba_id, name, language)
);

CREATE TABLE send_workers (
    worker_id             TEXT PRIMARY KEY,
    started_at_ms         INTEGER NOT NULL,
    reported_at_ms        INTEGER NOT NULL,
    in_flight             INTEGER NOT NULL,
    sent_last_minute      INTEGER NOT NULL,
    failed_last_minute    INTEGER NOT NULL,
    retried_last_minute   INTEGER NOT NULL,
    deferred_last_minute  INTEGER NOT NULL,
    sent_total            INTEGER NOT NULL,
    failed_total          INTEGER NOT NULL,
    retried_total         INTEGER NOT NULL,
    last_error_code       INTEGER NOT NULL,
    last_error            TEXT NOT NULL,
    last_error_at_ms      INTEGER NOT NULL
);

ALTER TABLE message_statuses ADD COLUMN callback_data TEXT;
CREATE INDEX message_statuses_callback ON message_statuses (callback_data) WHERE callback_data IS NOT NULL;
