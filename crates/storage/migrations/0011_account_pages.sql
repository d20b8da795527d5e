-- The account page sends codes too (an address being added), so the table of codes
-- under way on the pages gets a general name and, for an address being added, the
-- account it is for.
ALTER TABLE password_resets RENAME TO page_codes;
ALTER TABLE page_codes ADD COLUMN user_id TEXT;

-- The language the account's pages and mails use (a tag the catalogues have, `fr`),
-- chosen on the account page or taken from the sign-up page; none: the browser's.
ALTER TABLE users ADD COLUMN language TEXT;
