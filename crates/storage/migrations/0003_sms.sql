-- SMS share the outbox with mail. The destination country is kept for the per-country
-- send limit (a brake on SMS pumping).
ALTER TABLE outbox ADD COLUMN country TEXT;
CREATE INDEX outbox_country ON outbox (channel, country, created_at);
