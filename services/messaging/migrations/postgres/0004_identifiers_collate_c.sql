-- Identifiers compare as bytes. Under the database's default collation (C.UTF-8 here,
-- en_US.UTF-8 on many servers) every comparison inside a btree goes through strcoll, and each
-- webhook probes and inserts into several text-keyed indexes: wamids, sha256 digests, phone
-- and contact ids, statuses, dedup keys. Ids have no linguistic order; "C" is also the right
-- order for them. Rewrites the affected indexes (a short lock on a young database).
ALTER TABLE webhook_bodies ALTER COLUMN sha256 TYPE text COLLATE "C";
ALTER TABLE webhook_deliveries ALTER COLUMN body_sha256 TYPE text COLLATE "C";
ALTER TABLE messages ALTER COLUMN direction TYPE text COLLATE "C", ALTER COLUMN wamid TYPE text COLLATE "C",
    ALTER COLUMN business_phone_number_id TYPE text COLLATE "C", ALTER COLUMN contact_id TYPE text COLLATE "C";
ALTER TABLE message_statuses ALTER COLUMN wamid TYPE text COLLATE "C", ALTER COLUMN status TYPE text COLLATE "C";
ALTER TABLE contacts ALTER COLUMN business_phone_number_id TYPE text COLLATE "C", ALTER COLUMN contact_id TYPE text COLLATE "C";
ALTER TABLE webhook_events ALTER COLUMN dedup_key TYPE text COLLATE "C", ALTER COLUMN field TYPE text COLLATE "C";
