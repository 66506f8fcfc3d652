-- analytics: rate-limit usage peaks. The alert evaluator asks rate-limit for its most used
-- buckets every second; the highest usage ratio (0..1) it saw of each bucket (scope, key) is
-- kept per hour bucket (the aggregation interval) and per day bucket, with when it was seen,
-- like the other rollups. Writers upsert with GREATEST, so no writer can lower a peak.
CREATE TABLE ratelimit_peaks (
    grain       TEXT NOT NULL,
    bucket_ms   BIGINT NOT NULL,
    scope       TEXT COLLATE "C" NOT NULL,
    key         TEXT COLLATE "C" NOT NULL,
    usage_ratio DOUBLE PRECISION NOT NULL,
    at_ms       BIGINT NOT NULL,
    PRIMARY KEY (grain, bucket_ms, scope, key)
);
