-- analytics (issue 6): messaging's event log counted exactly once into rollups.
--
-- `consumer` is one row: the last event counted, moved in the same transaction as the rollup
-- changes of the events up to it (and only if it is still where the batch began), and the key
-- users are hashed with. `facts` (one per message) and `users` (one per user of a business
-- number) are what counting needs to remember between events; rollups are derived from them.
CREATE TABLE consumer (
    only_row       BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row),
    cursor         BIGINT NOT NULL,
    events_applied BIGINT NOT NULL,
    hash_key       BYTEA NOT NULL,
    updated_at_ms  BIGINT NOT NULL
);
INSERT INTO consumer (cursor, events_applied, hash_key, updated_at_ms)
    VALUES (0, 0, decode(md5(random()::text) || md5(random()::text), 'hex'), 0);

CREATE TABLE facts (
    key              TEXT COLLATE "C" PRIMARY KEY,
    wamid            TEXT COLLATE "C",
    number           TEXT COLLATE "C" NOT NULL,
    user_hash        BIGINT NOT NULL,
    direction        TEXT NOT NULL,
    message_type     TEXT NOT NULL,
    template         TEXT NOT NULL,
    pricing_category TEXT NOT NULL,
    at_ms            BIGINT,
    delivered_ms     BIGINT,
    read_ms          BIGINT,
    failed_ms        BIGINT,
    error_code       BIGINT NOT NULL,
    replied          BOOLEAN NOT NULL,
    clicked          BOOLEAN NOT NULL
);
CREATE INDEX facts_wamid ON facts (wamid) WHERE wamid IS NOT NULL;
CREATE INDEX facts_at ON facts (coalesce(at_ms, failed_ms));

CREATE TABLE users (
    number             TEXT COLLATE "C" NOT NULL,
    user_hash          BIGINT NOT NULL,
    last_direction     TEXT,
    turn_started_ms    BIGINT NOT NULL,
    session_started_ms BIGINT NOT NULL,
    session_last_ms    BIGINT NOT NULL,
    PRIMARY KEY (number, user_hash)
);

CREATE TABLE message_rollups (
    grain            TEXT NOT NULL,
    bucket_ms        BIGINT NOT NULL,
    number           TEXT COLLATE "C" NOT NULL,
    direction        TEXT COLLATE "C" NOT NULL,
    message_type     TEXT COLLATE "C" NOT NULL,
    template         TEXT COLLATE "C" NOT NULL,
    pricing_category TEXT COLLATE "C" NOT NULL,
    error_code       BIGINT NOT NULL,
    messages_in      BIGINT NOT NULL,
    messages_out     BIGINT NOT NULL,
    delivered        BIGINT NOT NULL,
    read             BIGINT NOT NULL,
    failed           BIGINT NOT NULL,
    rejected         BIGINT NOT NULL,
    replied          BIGINT NOT NULL,
    clicked          BIGINT NOT NULL,
    PRIMARY KEY (grain, bucket_ms, number, direction, message_type, template, pricing_category, error_code)
);

CREATE TABLE conversation_rollups (
    grain                   TEXT NOT NULL,
    bucket_ms               BIGINT NOT NULL,
    number                  TEXT COLLATE "C" NOT NULL,
    user_turns              BIGINT NOT NULL,
    user_turns_answered     BIGINT NOT NULL,
    business_turns          BIGINT NOT NULL,
    business_turns_answered BIGINT NOT NULL,
    sessions                BIGINT NOT NULL,
    session_ms              BIGINT NOT NULL,
    response_ms             BYTEA NOT NULL,
    users                   BYTEA NOT NULL,
    PRIMARY KEY (grain, bucket_ms, number)
);

CREATE TABLE delivery_sketches (
    grain     TEXT NOT NULL,
    bucket_ms BIGINT NOT NULL,
    number    TEXT COLLATE "C" NOT NULL,
    template  TEXT COLLATE "C" NOT NULL,
    sketch    BYTEA NOT NULL,
    PRIMARY KEY (grain, bucket_ms, number, template)
);
