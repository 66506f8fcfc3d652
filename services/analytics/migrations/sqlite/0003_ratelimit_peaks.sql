-- analytics: rate-limit usage peaks. The alert evaluator asks rate-limit for its most used
-- buckets every second; the highest usage ratio (0..1) it saw of each bucket (scope, key) is
-- kept per hour bucket (the aggregation interval) and per day bucket, with when it was seen,
-- like the other rollups. Writers upsert with max(), so no writer can lower a peak.
CREATE TABLE ratelimit_peaks (
    grain       TEXT NOT NULL,
    bucket_ms   INTEGER NOT NULL,
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    usage_ratio REAL NOT NULL,
    at_ms       INTEGER NOT NULL,
    PRIMARY KEY (grain, bucket_ms, scope, key)
);
