-- The event log (issue 5): every change messaging commits, in commit order, each with the trace
-- context of its change; and what status webhooks tell of our own sends.
--
-- Sequence numbers come from one row, `event_log_head`, updated last in every transaction that
-- appends events and locked by it until that transaction commits. So a later transaction's
-- events get higher numbers only once the earlier ones are visible: the log has no gaps and
-- its order is the commit order, and a reader that has seen seq n can never later find an
-- event below n (which a plain sequence, whose numbers commit out of order, would allow). The
-- price: appending transactions serialise for the moment of their commit. Nothing is locked
-- after the head, so it can never be part of a deadlock.
CREATE TABLE event_log (
    seq                      BIGINT PRIMARY KEY,
    kind                     TEXT COLLATE "C" NOT NULL,
    committed_at_ms          BIGINT NOT NULL,
    business_phone_number_id TEXT COLLATE "C" NOT NULL,
    contact_id               TEXT COLLATE "C" NOT NULL,
    wamid                    TEXT COLLATE "C",
    message_id               BIGINT,
    outbound_id              BIGINT,
    type                     TEXT,
    status                   TEXT,
    error_code               BIGINT NOT NULL DEFAULT 0,
    template_name            TEXT,
    pricing_category         TEXT,
    timestamp_s              BIGINT,
    context_wamid            TEXT,
    reply_id                 TEXT,
    traceparent              TEXT,
    tracestate               TEXT
);
CREATE TABLE event_log_head (
    only_row BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row),
    seq      BIGINT NOT NULL
);
INSERT INTO event_log_head (seq) VALUES (0);

-- The trace context each message and status was stored under (an inbound message's
-- processing span; an outbound message's send span; a status's confirmation span).
ALTER TABLE messages ADD COLUMN traceparent TEXT;
ALTER TABLE message_statuses ADD COLUMN traceparent TEXT;

-- Our message a status webhook speaks of, read from its callback data (`wamesh:<id>:...`):
-- how an in-doubt send is proven sent (replaces the index on the raw callback data, whose
-- format now carries more than the id).
ALTER TABLE message_statuses ADD COLUMN outbound_id BIGINT;
UPDATE message_statuses SET outbound_id = substr(callback_data, 8)::bigint
    WHERE callback_data ~ '^wamesh:[0-9]+$';
DROP INDEX message_statuses_callback;
CREATE INDEX message_statuses_outbound ON message_statuses (outbound_id) WHERE outbound_id IS NOT NULL;

-- The batch ingest of 0006, with each row's trace context, the outbound id of each status,
-- and the events of everything new appended last.
DROP FUNCTION wamesh_ingest_batch;
CREATE FUNCTION wamesh_ingest_batch(
    d_sha text[], d_body bytea[], d_received bigint[], d_size bigint[], d_verified text[],
    d_messages int[], d_statuses int[], d_contacts int[], d_errors int[], d_other int[], d_trace text[],
    p_stored_at bigint,
    m_slot int[], m_direction text[], m_wamid text[], m_origin text[], m_phone text[], m_contact text[],
    m_type text[], m_ts bigint[], m_received bigint[], m_text text[], m_media_id text[],
    m_media_mime text[], m_media_sha text[], m_media_caption text[], m_media_filename text[],
    m_media_url text[], m_lat float8[], m_lon float8[], m_loc_name text[], m_loc_address text[],
    m_reply_id text[], m_reply_title text[], m_target text[], m_emoji text[], m_context text[],
    m_forwarded bool[], m_errors text[], m_raw text[], m_trace text[],
    s_slot int[], s_wamid text[], s_status text[], s_ts bigint[], s_received bigint[], s_phone text[],
    s_recipient text[], s_errors text[], s_pricing text[], s_conversation text[], s_raw text[],
    s_callback text[], s_outbound bigint[], s_trace text[],
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
    -- What was new, kept (as JSON: a few columns of a few rows) for the events appended last.
    new_m_rows jsonb := '[]';
    new_s_rows jsonb := '[]';
    new_e_rows jsonb := '[]';
    appended int;
    base bigint;
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
                errors_json, raw_json, traceparent)
            SELECT m_direction[i], m_wamid[i], m_origin[i], m_phone[i], m_contact[i], m_type[i], m_ts[i],
                m_received[i], ids[m_slot[i] + 1], m_text[i], m_media_id[i], m_media_mime[i], m_media_sha[i],
                m_media_caption[i], m_media_filename[i], m_media_url[i], m_lat[i], m_lon[i], m_loc_name[i],
                m_loc_address[i], m_reply_id[i], m_reply_title[i], m_target[i], m_emoji[i], m_context[i],
                m_forwarded[i], m_errors[i], m_raw[i], m_trace[i]
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
                errors_json = EXCLUDED.errors_json, raw_json = EXCLUDED.raw_json,
                traceparent = EXCLUDED.traceparent
            WHERE messages.origin = 'external'
            RETURNING messages.id, delivery_id, direction, messages.business_phone_number_id,
                messages.contact_id, wamid, messages.type, messages.timestamp_s,
                messages.context_message_id, messages.reply_id, messages.traceparent)
        SELECT coalesce(array_agg(array_position(ids, ins.delivery_id) - 1), '{}'),
            coalesce(jsonb_agg(to_jsonb(ins)), '[]')
        INTO new_m, new_m_rows FROM ins;
    END IF;

    IF cardinality(s_wamid) > 0 THEN
        WITH ins AS (
            INSERT INTO message_statuses (wamid, status, timestamp_s, received_at_ms, delivery_id,
                business_phone_number_id, recipient_id, errors_json, pricing_category, conversation_id, raw_json,
                callback_data, outbound_id, traceparent)
            SELECT s_wamid[i], s_status[i], s_ts[i], s_received[i], ids[s_slot[i] + 1], s_phone[i],
                s_recipient[i], s_errors[i], s_pricing[i], s_conversation[i], s_raw[i], s_callback[i],
                s_outbound[i], s_trace[i]
            FROM generate_subscripts(s_wamid, 1) AS i
            ON CONFLICT (wamid, status) DO NOTHING
            RETURNING delivery_id, wamid, status, business_phone_number_id, recipient_id, outbound_id,
                errors_json, pricing_category, timestamp_s, traceparent)
        SELECT coalesce(array_agg(array_position(ids, ins.delivery_id) - 1), '{}'),
            coalesce(jsonb_agg(to_jsonb(ins)), '[]')
        INTO new_s, new_s_rows FROM ins;
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
            ON CONFLICT (dedup_key) DO NOTHING
            RETURNING webhook_events.id, delivery_id, business_phone_number_id, field, error_code)
        SELECT coalesce(array_agg(array_position(ids, ins.delivery_id) - 1), '{}'),
            coalesce(jsonb_agg(to_jsonb(ins)), '[]')
        INTO new_e, new_e_rows FROM ins;
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

    -- Last, the event log: its head row is locked until this transaction commits, so the
    -- next transaction's events get higher sequence numbers only after these are visible.
    -- Nothing else is locked after it (no deadlock can involve it).
    appended := jsonb_array_length(new_m_rows) + jsonb_array_length(new_s_rows)
        + jsonb_array_length(new_e_rows);
    IF appended > 0 THEN
        UPDATE event_log_head SET seq = seq + appended RETURNING seq - appended INTO base;
        INSERT INTO event_log (seq, kind, committed_at_ms, business_phone_number_id, contact_id, wamid,
            message_id, outbound_id, type, status, error_code, pricing_category, timestamp_s,
            context_wamid, reply_id, traceparent)
        SELECT base + row_number() OVER (ORDER BY x.delivery_id, x.part, x.ord), x.kind, p_stored_at,
            x.phone, x.contact, x.wamid, x.message_id, x.outbound_id, x.type, x.status, x.error_code,
            x.pricing, x.ts, x.context, x.reply_id, x.traceparent
        FROM (
            SELECT m.delivery_id, 1 AS part, m.id AS ord,
                CASE m.direction WHEN 'inbound' THEN 'message.received' ELSE 'message.echoed' END AS kind,
                m.business_phone_number_id AS phone, m.contact_id AS contact, m.wamid, m.id AS message_id,
                NULL::bigint AS outbound_id, m.type, NULL::text AS status, 0::bigint AS error_code,
                NULL::text AS pricing, m.timestamp_s AS ts, m.context_message_id AS context,
                m.reply_id, m.traceparent
            FROM jsonb_to_recordset(new_m_rows) AS m(id bigint, delivery_id bigint, direction text,
                business_phone_number_id text, contact_id text, wamid text, type text, timestamp_s bigint,
                context_message_id text, reply_id text, traceparent text)
            UNION ALL
            SELECT s.delivery_id, 2, s.n, 'status.updated', s.business_phone_number_id, s.recipient_id,
                s.wamid, (SELECT o.id FROM messages o WHERE o.wamid = s.wamid AND o.direction = 'outbound'),
                s.outbound_id, NULL, s.status, coalesce((s.errors_json::jsonb -> 0 ->> 'code')::bigint, 0),
                s.pricing_category, s.timestamp_s, NULL, NULL, s.traceparent
            FROM ROWS FROM (jsonb_to_recordset(new_s_rows) AS (delivery_id bigint, wamid text,
                status text, business_phone_number_id text, recipient_id text, outbound_id bigint,
                errors_json text, pricing_category text, timestamp_s bigint, traceparent text))
                WITH ORDINALITY AS s(delivery_id, wamid, status, business_phone_number_id, recipient_id,
                    outbound_id, errors_json, pricing_category, timestamp_s, traceparent, n)
            UNION ALL
            SELECT e.delivery_id, 3, e.id, 'webhook.event', e.business_phone_number_id, '', NULL, NULL,
                NULL, e.field, NULL, e.error_code, NULL, NULL, NULL, NULL,
                d_trace[array_position(ids, e.delivery_id)]
            FROM jsonb_to_recordset(new_e_rows) AS e(id bigint, delivery_id bigint,
                business_phone_number_id text, field text, error_code bigint)
        ) AS x;
    END IF;

    RETURN QUERY
        SELECT 'delivery', (i - 1)::int, ids[i] FROM generate_subscripts(d_sha, 1) AS i
        UNION ALL SELECT 'message', n, 0::bigint FROM unnest(new_m) AS n
        UNION ALL SELECT 'status', n, 0::bigint FROM unnest(new_s) AS n
        UNION ALL SELECT 'event', n, 0::bigint FROM unnest(new_e) AS n;
END
$$;
