-- The raw body moves into its delivery row and webhook_bodies goes; `duplicate_body` becomes
-- `duplicate` (every update of the webhook was stored before); `new_events` is added. Why: the
-- Postgres migration of the same name.
ALTER TABLE webhook_deliveries ADD COLUMN body BLOB NOT NULL DEFAULT x'';
UPDATE webhook_deliveries SET body = (SELECT b.body FROM webhook_bodies b WHERE b.sha256 = webhook_deliveries.body_sha256);
ALTER TABLE webhook_deliveries RENAME COLUMN duplicate_body TO duplicate;
ALTER TABLE webhook_deliveries ADD COLUMN new_events INT NOT NULL DEFAULT 0;
DROP TABLE webhook_bodies;
