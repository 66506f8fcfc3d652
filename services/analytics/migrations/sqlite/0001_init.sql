-- analytics (issue 6): messaging's event log counted exactly once into rollups.
--
-- `consumer` is one row: the last event counted, moved in the same transaction as the rollup
-- changes of the events up to it (and only if it is still where the batch began), and the key
-- users are hashed with. `facts` (one per message) and `users` (one per user of a business
-- number) are what counting needs to remember between events; rollups are derived from them.
CREATE TABLE consumer (
    only_row       INTEGER PRIMARY KEY CHECK (only_row = 1),
    cursor         INTEGER NOT NULL,
    events_applied INTEGER NOT NULL,
    hash_key       BLOB NOT NULL,
    updated_at_ms  INTEGER NOT NULL
);
INSERT INTO consumer (only_row, cursor, events_applied, hash_key, updated_at_ms)
    VALUES (1, 0, 0, randomblob(32), 0);

CREATE TABLE facts (
    key              TEXT PRIMARY KEY,
    wamid            TEXT,
    number           TEXT NOT NULL,
    user_hash        INTEGER NOT NULL,
    direction        TEXT NOT NULL,
    message_type     TEXT NOT NULL,
    template         TEXT NOT NULL,
    pricing_category TEXT NOT NULL,
    at_ms            INTEGER,
    delivered_ms     INTEGER,
    read_ms          INTEGER,
    failed_ms        INTEGER,
    error_code       INTEGER NOT NULL,
    replied          INTEGER NOT NULL,
    clicked          INTEGER NOT NULL
);
CREATE INDEX facts_wamid ON facts (wamid) WHERE wamid IS NOT NULL;
CREATE INDEX facts_at ON facts (coalesce(at_ms, failed_ms));

CREATE TABLE users (
    number             TEXT NOT NULL,
    user_hash          INTEGER NOT NULL,
    last_direction     TEXT,
    turn_started_ms    INTEGER NOT NULL,
    session_started_ms INTEGER NOT NULL,
    session_last_ms    INTEGER NOT NULL,
    PRIMARY KEY (number, user_hash)
);

CREATE TABLE message_rollups (
    grain            TEXT NOT NULL,
    bucket_ms        INTEGER NOT NULL,
    number           TEXT NOT NULL,
    direction        TEXT NOT NULL,
    message_type     TEXT NOT NULL,
    template         TEXT NOT NULL,
    pricing_category TEXT NOT NULL,
    error_code       INTEGER NOT NULL,
    messages_in      INTEGER NOT NULL,
    messages_out     INTEGER NOT NULL,
    delivered        INTEGER NOT NULL,
    read             INTEGER NOT NULL,
    failed           INTEGER NOT NULL,
    rejected         INTEGER NOT NULL,
    replied          INTEGER NOT NULL,
    clicked          INTEGER NOT NULL,
    PRIMARY KEY (grain, bucket_ms, number, direction, message_type, template, pricing_category, error_code)
);

CREATE TABLE conversation_rollups (
    grain                   TEXT NOT NULL,
    bucket_ms               INTEGER NOT NULL,
    number                  TEXT NOT NULL,
    user_turns              INTEGER NOT NULL,
    user_turns_answered     INTEGER NOT NULL,
    business_turns          INTEGER NOT NULL,
    business_turns_answered INTEGER NOT NULL,
    sessions                INTEGER NOT NULL,
    session_ms              INTEGER NOT NULL,
    response_ms             BLOB NOT NULL,
    users                   BLOB NOT NULL,
    PRIMARY KEY (grain, bucket_ms, number)
);

CREATE TABLE delivery_sketches (
    grain     TEXT NOT NULL,
    bucket_ms INTEGER NOT NULL,
    number    TEXT NOT NULL,
    template  TEXT NOT NULL,
    sketch    BLOB NOT NULL,
    PRIMARY KEY (grain, bucket_ms, number, template)
);
