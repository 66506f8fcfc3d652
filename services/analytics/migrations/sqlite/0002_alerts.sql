-- analytics: alerts. One row per alert that fired; firing while resolved_at_ms is NULL. At
-- most one alert per (kind, subject) fires at a time: the partial unique index refuses a second
-- one, whichever evaluator (or restarted process) tries.
CREATE TABLE alerts (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    kind           TEXT NOT NULL,
    subject        TEXT NOT NULL,
    value          REAL NOT NULL,
    peak           REAL NOT NULL,
    threshold      REAL NOT NULL,
    fired_at_ms    INTEGER NOT NULL,
    resolved_at_ms INTEGER,
    summary        TEXT NOT NULL
);
CREATE UNIQUE INDEX alerts_one_firing ON alerts (kind, subject) WHERE resolved_at_ms IS NULL;
CREATE INDEX alerts_newest ON alerts (fired_at_ms DESC, id DESC);
