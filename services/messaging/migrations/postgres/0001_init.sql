-- messaging's store (Postgres). Times are Unix milliseconds (`*_ms`) or Meta's Unix seconds (`*_s`).

-- Every distinct webhook body, exactly as received (Meta's retries share one row).
CREATE TABLE webhook_bodies (
    sha256        TEXT PRIMARY KEY,
    body          BYTEA NOT NULL,
    first_seen_ms BIGINT NOT NULL
);

-- The delivery log: one row per webhook POST that reached messaging, retries included.
CREATE TABLE webhook_deliveries (
    id             BIGINT PRIMARY KEY,
    -- webhook_bodies.sha256; no FOREIGN KEY: both rows are written by the same call, and a
    -- per-row key check was the dearest part of a batch.
    body_sha256    TEXT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    stored_at_ms   BIGINT NOT NULL,
    size_bytes     BIGINT NOT NULL,
    duplicate_body BOOLEAN NOT NULL,
    verified_by    TEXT NOT NULL,
    messages       INT NOT NULL,
    statuses       INT NOT NULL,
    contacts       INT NOT NULL,
    errors         INT NOT NULL,
    other_fields   INT NOT NULL,
    new_messages   INT NOT NULL,
    new_statuses   INT NOT NULL
);
CREATE SEQUENCE webhook_deliveries_id_seq OWNED BY webhook_deliveries.id;
CREATE INDEX webhook_deliveries_received ON webhook_deliveries (received_at_ms);

-- Messages in both directions; Meta's wamid is unique per direction.
CREATE TABLE messages (
    id                       BIGSERIAL PRIMARY KEY,
    direction                TEXT NOT NULL,
    wamid                    TEXT NOT NULL,
    origin                   TEXT NOT NULL,
    business_phone_number_id TEXT NOT NULL,
    contact_id               TEXT NOT NULL,
    type                     TEXT NOT NULL,
    timestamp_s              BIGINT NOT NULL,
    received_at_ms           BIGINT NOT NULL,
    delivery_id              BIGINT,
    text_body                TEXT,
    media_id                 TEXT,
    media_mime_type          TEXT,
    media_sha256             TEXT,
    media_caption            TEXT,
    media_filename           TEXT,
    media_url                TEXT,
    latitude                 DOUBLE PRECISION,
    longitude                DOUBLE PRECISION,
    location_name            TEXT,
    location_address         TEXT,
    reply_id                 TEXT,
    reply_title              TEXT,
    target_message_id        TEXT,
    reaction_emoji           TEXT,
    context_message_id       TEXT,
    forwarded                BOOLEAN NOT NULL,
    errors_json              TEXT NOT NULL,
    status                   TEXT,
    status_rank              INT NOT NULL DEFAULT 0,
    raw_json                 TEXT NOT NULL,
    UNIQUE (wamid, direction)
) WITH (fillfactor = 70); -- room for HOT updates: status changes touch no indexed column
CREATE INDEX messages_conversation ON messages (business_phone_number_id, contact_id, timestamp_s DESC, id DESC);

-- Every delivery status ever received, once per (message, status): the timeline.
CREATE TABLE message_statuses (
    wamid                    TEXT NOT NULL,
    status                   TEXT NOT NULL,
    timestamp_s              BIGINT NOT NULL,
    received_at_ms           BIGINT NOT NULL,
    delivery_id              BIGINT NOT NULL,
    business_phone_number_id TEXT NOT NULL,
    recipient_id             TEXT NOT NULL,
    errors_json              TEXT NOT NULL,
    pricing_category         TEXT,
    conversation_id          TEXT,
    raw_json                 TEXT NOT NULL,
    PRIMARY KEY (wamid, status)
);

-- Users per business number; last_inbound_s drives the 24-hour customer service window.
CREATE TABLE contacts (
    business_phone_number_id TEXT NOT NULL,
    contact_id               TEXT NOT NULL,
    wa_id                    TEXT,
    user_id                  TEXT,
    profile_name             TEXT,
    first_seen_ms            BIGINT NOT NULL,
    last_seen_ms             BIGINT NOT NULL,
    last_inbound_s           BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (business_phone_number_id, contact_id)
);
CREATE INDEX contacts_recent ON contacts (last_seen_ms DESC, business_phone_number_id, contact_id);

-- Everything else a webhook says: other fields whole, and value.errors items.
CREATE TABLE webhook_events (
    id                       BIGSERIAL PRIMARY KEY,
    dedup_key                TEXT NOT NULL UNIQUE,
    delivery_id              BIGINT NOT NULL,
    received_at_ms           BIGINT NOT NULL,
    waba_id                  TEXT NOT NULL,
    business_phone_number_id TEXT NOT NULL,
    field                    TEXT NOT NULL,
    kind                     TEXT NOT NULL,
    error_code               BIGINT NOT NULL,
    raw_json                 TEXT NOT NULL
);
CREATE INDEX webhook_events_field ON webhook_events (field, id);
