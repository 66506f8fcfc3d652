-- Sending (issue 4): the outbound queue, the template registry, the send workers' reports, and
-- the echo of our own reference on statuses.
--
-- outbound_messages is the queue and the record of every message wamesh sends. A row goes
-- queued -> sending (claimed by a worker: claim_token fences its answer, lease_until_ms bounds
-- its claim) -> sent (Meta accepted it: wamid) | queued again (deferred by a rate limit, or a
-- transient error: next_attempt_at_ms) | failed (permanent) | dead (out of attempts) |
-- in_doubt (the call's outcome is unknown: a crash between the call and its record, or an
-- answer lost on the way). An in-doubt row is not sent again until the evidence is in: every
-- send carries biz_opaque_callback_data = 'wamesh:<id>', which Meta echoes on the message's
-- status webhooks (message_statuses.callback_data below); a status with it proves Meta has the
-- message, and its wamid is recorded. Only when none came within the evidence window is the row
-- queued again.
CREATE TABLE outbound_messages (
    id                       BIGSERIAL PRIMARY KEY,
    business_phone_number_id TEXT COLLATE "C" NOT NULL,
    idempotency_key          TEXT COLLATE "C" NOT NULL,
    -- SHA-256 of the request as validated: the same key with another message is refused.
    request_digest           TEXT NOT NULL,
    recipient                TEXT COLLATE "C" NOT NULL,
    type                     TEXT NOT NULL,
    template_name            TEXT,
    template_language        TEXT,
    -- The text users read (text and interactive bodies), for the conversation history.
    preview                  TEXT,
    -- The Graph API request body (JSON) without biz_opaque_callback_data, added per call.
    payload                  TEXT NOT NULL,
    -- How it went instead of as asked ({requested, sent_as, reason}), or NULL.
    fallback_json            TEXT,
    state                    TEXT NOT NULL,
    attempts                 INT NOT NULL DEFAULT 0,
    next_attempt_at_ms       BIGINT NOT NULL,
    queued_at_ms             BIGINT NOT NULL,
    claim_token              BIGINT,
    claimed_by               TEXT,
    lease_until_ms           BIGINT,
    in_doubt_since_ms        BIGINT,
    wamid                    TEXT COLLATE "C",
    accepted_at_ms           BIGINT,
    -- The last error: Meta's code (0 for a network or rate-limit problem) and its JSON.
    error_code               BIGINT,
    error_json               TEXT,
    traceparent              TEXT,
    tracestate               TEXT,
    UNIQUE (business_phone_number_id, idempotency_key)
);
-- Workers claim from the due end; queue_depth, due_now and the oldest age read it alone.
CREATE INDEX outbound_queued ON outbound_messages (next_attempt_at_ms, id) INCLUDE (queued_at_ms)
    WHERE state = 'queued';
CREATE INDEX outbound_unsettled ON outbound_messages (state, lease_until_ms)
    WHERE state IN ('sending', 'in_doubt');
CREATE INDEX outbound_dead ON outbound_messages (id) WHERE state = 'dead';

-- Message templates as registered at Meta, with what to send when one cannot be sent.
CREATE TABLE templates (
    waba_id                    TEXT COLLATE "C" NOT NULL,
    name                       TEXT COLLATE "C" NOT NULL,
    language                   TEXT COLLATE "C" NOT NULL,
    category                   TEXT NOT NULL,
    status                     TEXT NOT NULL,
    components_json            TEXT NOT NULL,
    fallback_template_name     TEXT,
    fallback_template_language TEXT,
    fallback_text              TEXT,
    created_at_ms              BIGINT NOT NULL,
    updated_at_ms              BIGINT NOT NULL,
    PRIMARY KEY (waba_id, name, language)
);

-- What each send worker of each replica reported last (GET /api/workers/whatsapp).
CREATE TABLE send_workers (
    worker_id             TEXT PRIMARY KEY,
    started_at_ms         BIGINT NOT NULL,
    reported_at_ms        BIGINT NOT NULL,
    in_flight             INT NOT NULL,
    sent_last_minute      INT NOT NULL,
    failed_last_minute    INT NOT NULL,
    retried_last_minute   INT NOT NULL,
    deferred_last_minute  INT NOT NULL,
    sent_total            BIGINT NOT NULL,
    failed_total          BIGINT NOT NULL,
    retried_total         BIGINT NOT NULL,
    last_error_code       BIGINT NOT NULL,
    last_error            TEXT NOT NULL,
    last_error_at_ms      BIGINT NOT NULL
);

-- biz_opaque_callback_data as Meta echoed it on a status: how an in-doubt send is proven sent.
ALTER TABLE message_statuses ADD COLUMN callback_data TEXT COLLATE "C";
CREATE INDEX message_statuses_callback ON message_statuses (callback_data) WHERE callback_data IS NOT NULL;

-- The batch ingest of 0005, storing each status's callback data too.
DROP FUNCTION wamesh_ingest_batch;
CREATE FUNCTION wamesh_ingest_batch(
    d_sha text[], d_body bytea[], d_received bigint[], d_size bigint[], d_verified text[],
    d_messages int[], d_statuses int[], d_contacts int[], d_errors int[], d_other int[],
    p_stored_at bigint,
    m_slot int[], m_direction text[], m_wamid text[], m_origin text[], m_phone text[], m_contact text[],
    m_type text[], m_ts bigint[], m_received bigint[], m_text text[], m_media_id text[],
    m_media_mime text[], m_media_sha text[], m_media_caption text[], m_media_filename text[],
    m_media_url text[], m_lat float8[], m_lon float8[], m_loc_name text[], m_loc_address text[],
    m_reply_id text[], m_reply_title text[], m_target text[], m_emoji text[], m_context text[],
    m_forwarded bool[], m_errors text[], m_raw text[],
    s_slot int[], s_wamid text[], s_status text[], s_ts bigint[], s_received bigint[], s_phone text[],
    s_recipient text[], s_errors text[], s_pricing text[], s_conversation text[], s_raw text[],
    s_callback text[],
    t_wamid text[], t_phone text[], t_recipient text[], t_ts bigint[], t_status text[], t_rank int[],
    c_phone text[], c_contact text[], c_wa text[], c_user text[], c_name text[], c_seen bigint[],
    c_inbound bigint[],
    e_slot int[], e_key text[], e_received bigint[], e_waba text[], e_phone text[], e_field text[],
    e_kind text[], e_code bigint[], e_raw text[]
) RETURNS TABLE (kind text, slot int, id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    ids bigint[];
    new_m int[] := '{}';
    new_s int[] := '{}';
    new_e int[] := '{}';
BEGIN
    SELECT array_agg(nextval('webhook_deliveries_id_seq') ORDER BY g) INTO ids
    FROM generate_series(1, cardinality(d_sha)) AS g;

    -- A message known until now only from its statuses (origin 'external') gets its content;
    -- its delivery state stays. delivery_id names the slot that brought it.
    IF cardinality(m_wamid) > 0 THEN
        WITH ins AS (
            INSERT INTO messages (direction, wamid, origin, business_phone_number_id, contact_id, type,
                timestamp_s, received_at_ms, delivery_id, text_body, media_id, media_mime_type, media_sha256,
                media_caption, media_filename, media_url, latitude, longitude, location_name, location_address,
                reply_id, reply_title, target_message_id, reaction_emoji, context_message_id, forwarded,
                errors_json, raw_json)
            SELECT m_direction[i], m_wamid[i], m_origin[i], m_phone[i], m_contact[i], m_type[i], m_ts[i],
                m_received[i], ids[m_slot[i] + 1], m_text[i], m_media_id[i], m_media_mime[i], m_media_sha[i],
                m_media_caption[i], m_media_filename[i], m_media_url[i], m_lat[i], m_lon[i], m_loc_name[i],
                m_loc_address[i], m_reply_id[i], m_reply_title[i], m_target[i], m_emoji[i], m_context[i],
                m_forwarded[i], m_errors[i], m_raw[i]
            FROM generate_subscripts(m_wamid, 1) AS i
            ON CONFLICT (wamid, direction) DO UPDATE SET origin = EXCLUDED.origin,
                business_phone_number_id = EXCLUDED.business_phone_number_id, contact_id = EXCLUDED.contact_id,
                type = EXCLUDED.type, timestamp_s = EXCLUDED.timestamp_s, received_at_ms = EXCLUDED.received_at_ms,
                delivery_id = EXCLUDED.delivery_id, text_body = EXCLUDED.text_body, media_id = EXCLUDED.media_id,
                media_mime_type = EXCLUDED.media_mime_type, media_sha256 = EXCLUDED.media_sha256,
                media_caption = EXCLUDED.media_caption, media_filename = EXCLUDED.media_filename,
                media_url = EXCLUDED.media_url, latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude,
                location_name = EXCLUDED.location_name, location_address = EXCLUDED.location_address,
                reply_id = EXCLUDED.reply_id, reply_title = EXCLUDED.reply_title,
                target_message_id = EXCLUDED.target_message_id, reaction_emoji = EXCLUDED.reaction_emoji,
                context_message_id = EXCLUDED.context_message_id, forwarded = EXCLUDED.forwarded,
                errors_json = EXCLUDED.errors_json, raw_json = EXCLUDED.raw_json
            WHERE messages.origin = 'external'
            RETURNING delivery_id)
        SELECT coalesce(array_agg(array_position(ids, ins.delivery_id) - 1), '{}') INTO new_m FROM ins;
    END IF;

    IF cardinality(s_wamid) > 0 THEN
        WITH ins AS (
            INSERT INTO message_statuses (wamid, status, timestamp_s, received_at_ms, delivery_id,
                business_phone_number_id, recipient_id, errors_json, pricing_category, conversation_id, raw_json,
                callback_data)
            SELECT s_wamid[i], s_status[i], s_ts[i], s_received[i], ids[s_slot[i] + 1], s_phone[i],
                s_recipient[i], s_errors[i], s_pricing[i], s_conversation[i], s_raw[i], s_callback[i]
            FROM generate_subscripts(s_wamid, 1) AS i
            ON CONFLICT (wamid, status) DO NOTHING RETURNING delivery_id)
        SELECT coalesce(array_agg(array_position(ids, ins.delivery_id) - 1), '{}') INTO new_s FROM ins;
    END IF;

    -- Outbound messages known only by their statuses are created; states move forward, never back.
    IF cardinality(t_wamid) > 0 THEN
        INSERT INTO messages (direction, wamid, origin, business_phone_number_id, contact_id, type,
            timestamp_s, received_at_ms, forwarded, errors_json, raw_json, status, status_rank)
        SELECT 'outbound', t_wamid[i], 'external', t_phone[i], t_recipient[i], '', t_ts[i], p_stored_at,
            false, '[]', '{}', t_status[i], t_rank[i]
        FROM generate_subscripts(t_wamid, 1) AS i
        ON CONFLICT (wamid, direction) DO UPDATE SET status = EXCLUDED.status, status_rank = EXCLUDED.status_rank
        WHERE messages.status_rank < EXCLUDED.status_rank;
    END IF;

    IF cardinality(c_contact) > 0 THEN
        INSERT INTO contacts (business_phone_number_id, contact_id, wa_id, user_id, profile_name,
            first_seen_ms, last_seen_ms, last_inbound_s)
        SELECT c_phone[i], c_contact[i], c_wa[i], c_user[i], c_name[i], c_seen[i], c_seen[i], c_inbound[i]
        FROM generate_subscripts(c_contact, 1) AS i
        ON CONFLICT (business_phone_number_id, contact_id) DO UPDATE SET
            wa_id = COALESCE(EXCLUDED.wa_id, contacts.wa_id),
            user_id = COALESCE(EXCLUDED.user_id, contacts.user_id),
            profile_name = COALESCE(EXCLUDED.profile_name, contacts.profile_name),
            last_seen_ms = GREATEST(contacts.last_seen_ms, EXCLUDED.last_seen_ms),
            last_inbound_s = GREATEST(contacts.last_inbound_s, EXCLUDED.last_inbound_s);
    END IF;

    IF cardinality(e_key) > 0 THEN
        WITH ins AS (
            INSERT INTO webhook_events (dedup_key, delivery_id, received_at_ms, waba_id, business_phone_number_id,
                field, kind, error_code, raw_json)
            SELECT e_key[i], ids[e_slot[i] + 1], e_received[i], e_waba[i], e_phone[i], e_field[i], e_kind[i],
                e_code[i], e_raw[i]
            FROM generate_subscripts(e_key, 1) AS i
            ON CONFLICT (dedup_key) DO NOTHING RETURNING delivery_id)
        SELECT coalesce(array_agg(array_position(ids, ins.delivery_id) - 1), '{}') INTO new_e FROM ins;
    END IF;

    -- A duplicate held updates and every one of them was stored before (store/plan.rs).
    INSERT INTO webhook_deliveries (id, body, body_sha256, received_at_ms, stored_at_ms, size_bytes, duplicate,
        verified_by, messages, statuses, contacts, errors, other_fields, new_messages, new_statuses, new_events)
    SELECT ids[i], d_body[i], d_sha[i], d_received[i], p_stored_at, d_size[i],
        d_messages[i] + d_statuses[i] + d_errors[i] + d_other[i] > 0
            AND nm.count IS NULL AND ns.count IS NULL AND ne.count IS NULL,
        d_verified[i], d_messages[i], d_statuses[i], d_contacts[i], d_errors[i], d_other[i],
        coalesce(nm.count, 0), coalesce(ns.count, 0), coalesce(ne.count, 0)
    FROM generate_subscripts(d_sha, 1) AS i
    LEFT JOIN (SELECT n, count(*) FROM unnest(new_m) AS n GROUP BY n) AS nm ON nm.n = i - 1
    LEFT JOIN (SELECT n, count(*) FROM unnest(new_s) AS n GROUP BY n) AS ns ON ns.n = i - 1
    LEFT JOIN (SELECT n, count(*) FROM unnest(new_e) AS n GROUP BY n) AS ne ON ne.n = i - 1;

    RETURN QUERY
        SELECT 'delivery', (i - 1)::int, ids[i] FROM generate_subscripts(d_sha, 1) AS i
        UNION ALL SELECT 'message', n, 0::bigint FROM unnest(new_m) AS n
        UNION ALL SELECT 'status', n, 0::bigint FROM unnest(new_s) AS n
        UNION ALL SELECT 'event', n, 0::bigint FROM unnest(new_e) AS n;
END
$$;
