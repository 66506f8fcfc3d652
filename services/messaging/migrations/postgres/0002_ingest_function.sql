-- One round trip per batch: group commit hands a whole batch of webhooks to this function,
-- which writes every table in the single implicit transaction of its call. Under load each
-- round trip waits to be scheduled on a busy machine, so one call instead of nine is what lets
-- a batch commit quickly. store/plan.rs decides the rows (deduplicated, sorted by key);
-- `slot` is a webhook's 0-based place in the batch. Returns the delivery id of every slot and
-- what was new: bodies (by sha256), messages and statuses (by the slot that brought them).
CREATE FUNCTION wamesh_ingest_batch(
    d_sha text[], d_received bigint[], d_size bigint[], d_verified text[],
    d_messages int[], d_statuses int[], d_contacts int[], d_errors int[], d_other int[],
    p_stored_at bigint,
    b_sha text[], b_body bytea[], b_seen bigint[],
    m_slot int[], m_direction text[], m_wamid text[], m_origin text[], m_phone text[], m_contact text[],
    m_type text[], m_ts bigint[], m_received bigint[], m_text text[], m_media_id text[],
    m_media_mime text[], m_media_sha text[], m_media_caption text[], m_media_filename text[],
    m_media_url text[], m_lat float8[], m_lon float8[], m_loc_name text[], m_loc_address text[],
    m_reply_id text[], m_reply_title text[], m_target text[], m_emoji text[], m_context text[],
    m_forwarded bool[], m_errors text[], m_raw text[],
    s_slot int[], s_wamid text[], s_status text[], s_ts bigint[], s_received bigint[], s_phone text[],
    s_recipient text[], s_errors text[], s_pricing text[], s_conversation text[], s_raw text[],
    t_wamid text[], t_phone text[], t_recipient text[], t_ts bigint[], t_status text[], t_rank int[],
    c_phone text[], c_contact text[], c_wa text[], c_user text[], c_name text[], c_seen bigint[],
    c_inbound bigint[],
    e_slot int[], e_key text[], e_received bigint[], e_waba text[], e_phone text[], e_field text[],
    e_kind text[], e_code bigint[], e_raw text[]
) RETURNS TABLE (kind text, slot int, id bigint, key text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    ids bigint[];
    new_bodies text[];
    new_m int[];
    new_s int[];
BEGIN
    SELECT array_agg(nextval('webhook_deliveries_id_seq') ORDER BY g) INTO ids
    FROM generate_series(1, cardinality(d_sha)) AS g;

    WITH ins AS (
        INSERT INTO webhook_bodies (sha256, body, first_seen_ms)
        SELECT * FROM unnest(b_sha, b_body, b_seen)
        ON CONFLICT (sha256) DO NOTHING RETURNING sha256)
    SELECT coalesce(array_agg(ins.sha256), '{}') INTO new_bodies FROM ins;

    -- A message known until now only from its statuses (origin 'external') gets its content;
    -- its delivery state stays.
    WITH ins AS (
        INSERT INTO messages (direction, wamid, origin, business_phone_number_id, contact_id, type,
            timestamp_s, received_at_ms, delivery_id, text_body, media_id, media_mime_type, media_sha256,
            media_caption, media_filename, media_url, latitude, longitude, location_name, location_address,
            reply_id, reply_title, target_message_id, reaction_emoji, context_message_id, forwarded,
            errors_json, raw_json)
        SELECT u.direction, u.wamid, u.origin, u.phone, u.contact, u.type, u.ts, u.received, ids[u.slot + 1],
            u.text, u.media_id, u.media_mime, u.media_sha, u.media_caption, u.media_filename, u.media_url,
            u.lat, u.lon, u.loc_name, u.loc_address, u.reply_id, u.reply_title, u.target, u.emoji, u.context,
            u.forwarded, u.errors, u.raw
        FROM unnest(m_slot, m_direction, m_wamid, m_origin, m_phone, m_contact, m_type, m_ts, m_received,
            m_text, m_media_id, m_media_mime, m_media_sha, m_media_caption, m_media_filename, m_media_url,
            m_lat, m_lon, m_loc_name, m_loc_address, m_reply_id, m_reply_title, m_target, m_emoji,
            m_context, m_forwarded, m_errors, m_raw)
            AS u(slot, direction, wamid, origin, phone, contact, type, ts, received, text, media_id,
                 media_mime, media_sha, media_caption, media_filename, media_url, lat, lon, loc_name,
                 loc_address, reply_id, reply_title, target, emoji, context, forwarded, errors, raw)
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
        RETURNING wamid, direction)
    SELECT coalesce(array_agg(u.slot), '{}') INTO new_m
    FROM ins JOIN unnest(m_slot, m_wamid, m_direction) AS u(slot, wamid, direction)
        ON u.wamid = ins.wamid AND u.direction = ins.direction;

    WITH ins AS (
        INSERT INTO message_statuses (wamid, status, timestamp_s, received_at_ms, delivery_id,
            business_phone_number_id, recipient_id, errors_json, pricing_category, conversation_id, raw_json)
        SELECT u.wamid, u.status, u.ts, u.received, ids[u.slot + 1], u.phone, u.recipient, u.errors,
            u.pricing, u.conversation, u.raw
        FROM unnest(s_slot, s_wamid, s_status, s_ts, s_received, s_phone, s_recipient, s_errors, s_pricing,
            s_conversation, s_raw)
            AS u(slot, wamid, status, ts, received, phone, recipient, errors, pricing, conversation, raw)
        ON CONFLICT (wamid, status) DO NOTHING RETURNING wamid, status)
    SELECT coalesce(array_agg(u.slot), '{}') INTO new_s
    FROM ins JOIN unnest(s_slot, s_wamid, s_status) AS u(slot, wamid, status)
        ON u.wamid = ins.wamid AND u.status = ins.status;

    -- Outbound messages known only by their statuses are created; states move forward, never back.
    INSERT INTO messages (direction, wamid, origin, business_phone_number_id, contact_id, type,
        timestamp_s, received_at_ms, forwarded, errors_json, raw_json, status, status_rank)
    SELECT 'outbound', u.wamid, 'external', u.phone, u.recipient, '', u.ts, p_stored_at, false, '[]', '{}',
        u.status, u.rank
    FROM unnest(t_wamid, t_phone, t_recipient, t_ts, t_status, t_rank) AS u(wamid, phone, recipient, ts, status, rank)
    ON CONFLICT (wamid, direction) DO UPDATE SET status = EXCLUDED.status, status_rank = EXCLUDED.status_rank
    WHERE messages.status_rank < EXCLUDED.status_rank;

    INSERT INTO contacts (business_phone_number_id, contact_id, wa_id, user_id, profile_name,
        first_seen_ms, last_seen_ms, last_inbound_s)
    SELECT u.phone, u.contact, u.wa, u.usr, u.name, u.seen, u.seen, u.inbound
    FROM unnest(c_phone, c_contact, c_wa, c_user, c_name, c_seen, c_inbound)
        AS u(phone, contact, wa, usr, name, seen, inbound)
    ON CONFLICT (business_phone_number_id, contact_id) DO UPDATE SET
        wa_id = COALESCE(EXCLUDED.wa_id, contacts.wa_id),
        user_id = COALESCE(EXCLUDED.user_id, contacts.user_id),
        profile_name = COALESCE(EXCLUDED.profile_name, contacts.profile_name),
        last_seen_ms = GREATEST(contacts.last_seen_ms, EXCLUDED.last_seen_ms),
        last_inbound_s = GREATEST(contacts.last_inbound_s, EXCLUDED.last_inbound_s);

    INSERT INTO webhook_events (dedup_key, delivery_id, received_at_ms, waba_id, business_phone_number_id,
        field, kind, error_code, raw_json)
    SELECT u.dkey, ids[u.slot + 1], u.received, u.waba, u.phone, u.field, u.ekind, u.code, u.raw
    FROM unnest(e_slot, e_key, e_received, e_waba, e_phone, e_field, e_kind, e_code, e_raw)
        AS u(slot, dkey, received, waba, phone, field, ekind, code, raw)
    ON CONFLICT (dedup_key) DO NOTHING;

    -- A body is a duplicate when it was stored before, or an earlier slot of this batch has it.
    INSERT INTO webhook_deliveries (id, body_sha256, received_at_ms, stored_at_ms, size_bytes, duplicate_body,
        verified_by, messages, statuses, contacts, errors, other_fields, new_messages, new_statuses)
    SELECT ids[i], d_sha[i], d_received[i], p_stored_at, d_size[i],
        NOT (d_sha[i] = ANY (new_bodies) AND array_position(d_sha, d_sha[i]) = i),
        d_verified[i], d_messages[i], d_statuses[i], d_contacts[i], d_errors[i], d_other[i],
        coalesce(nm.count, 0), coalesce(ns.count, 0)
    FROM generate_subscripts(d_sha, 1) AS i
    LEFT JOIN (SELECT n, count(*) FROM unnest(new_m) AS n GROUP BY n) AS nm ON nm.n = i - 1
    LEFT JOIN (SELECT n, count(*) FROM unnest(new_s) AS n GROUP BY n) AS ns ON ns.n = i - 1;

    RETURN QUERY
        SELECT 'delivery', (i - 1)::int, ids[i], NULL::text FROM generate_subscripts(d_sha, 1) AS i
        UNION ALL SELECT 'body', 0, 0::bigint, b FROM unnest(new_bodies) AS b
        UNION ALL SELECT 'message', n, 0::bigint, NULL FROM unnest(new_m) AS n
        UNION ALL SELECT 'status', n, 0::bigint, NULL FROM unnest(new_s) AS n;
END
$$;
