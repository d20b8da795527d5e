-- Guessable stages (password, registration token) a UIA session has been presented with.
-- Spent with a conditional update before each check, so concurrent guesses cannot pass the
-- cap together.
ALTER TABLE uia_sessions ADD COLUMN guesses BIGINT NOT NULL DEFAULT 0;

-- What the request that started a session asked for (a hash of its operation-relevant
-- fields): a later round must ask for the same, so a session started for one new password
-- cannot finish a change to another.
ALTER TABLE uia_sessions ADD COLUMN binding TEXT;
