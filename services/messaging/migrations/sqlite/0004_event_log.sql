-- The event log, each row's trace context, and the outbound id of statuses. Why and how: the
-- Postgres migration of the same name (0007_event_log.sql). SQLite has one writer, so the
-- head row's sequence numbers are in commit order by themselves.
CREATE TABLE event_log (
    seq                      INTEGER PRIMARY KEY,
    kind                     TEXT NOT NULL,
    committed_at_ms          INTEGER NOT NULL,
    business_phone_number_id TEXT NOT NULL,
    contact_id               TEXT NOT NULL,
    wamid                    TEXT,
    message_id               INTEGER,
    outbound_id              INTEGER,
    type                     TEXT,
    status                   TEXT,
    error_code               INTEGER NOT NULL DEFAULT 0,
    template_name            TEXT,
    pricing_category         TEXT,
    timestamp_s              INTEGER,
    context_wamid            TEXT,
    reply_id                 TEXT,
    traceparent              TEXT,
    tracestate               TEXT
);
CREATE TABLE event_log_head (
    only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
    seq      INTEGER NOT NULL
);
INSERT INTO event_log_head (only_row, seq) VALUES (1, 0);

ALTER TABLE messages ADD COLUMN traceparent TEXT;
ALTER TABLE message_statuses ADD COLUMN traceparent TEXT;
ALTER TABLE message_statuses ADD COLUMN outbound_id INTEGER;
UPDATE message_statuses SET outbound_id = CAST(substr(callback_data, 8) AS INTEGER)
    WHERE callback_data GLOB 'wamesh:[0-9]*' AND substr(callback_data, 8) NOT GLOB '*[^0-9]*';
DROP INDEX message_statuses_callback;
CREATE INDEX message_statuses_outbound ON message_statuses (outbound_id) WHERE outbound_id IS NOT NULL;
