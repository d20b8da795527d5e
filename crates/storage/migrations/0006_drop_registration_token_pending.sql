-- Registration tokens never held a use for a registration in progress (a use is spent in
-- the transaction that creates the account), so `pending` was always 0.
ALTER TABLE registration_tokens DROP COLUMN pending;
