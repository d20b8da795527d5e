-- When an authorization code was presented again after it was spent: the exchange that
-- spent it checks this after writing its session, so a replay that came before the
-- session existed still ends it.
ALTER TABLE oauth_grants ADD COLUMN replayed_at BIGINT;
