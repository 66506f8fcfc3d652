-- analytics: alerts. One row per alert that fired; firing while resolved_at_ms is NULL. At
-- most one alert per (kind, subject) fires at a time: the partial unique index refuses a second
-- one, whichever evaluator (or restarted process) tries.
CREATE TABLE alerts (
    id             BIGSERIAL PRIMARY KEY,
    kind           TEXT NOT NULL,
    subject        TEXT COLLATE "C" NOT NULL,
    value          DOUBLE PRECISION NOT NULL,
    peak           DOUBLE PRECISION NOT NULL,
    threshold      DOUBLE PRECISION NOT NULL,
    fired_at_ms    BIGINT NOT NULL,
    resolved_at_ms BIGINT,
    summary        TEXT NOT NULL
);
CREATE UNIQUE INDEX alerts_one_firing ON alerts (kind, subject) WHERE resolved_at_ms IS NULL;
CREATE INDEX alerts_newest ON alerts (fired_at_ms DESC, id DESC);
