-- Users Vouch itself asked the homeserver to create (it answered "created"). A registration
-- that failed after that, here, may take the name again; a user the homeserver had from
-- elsewhere (an application service's) never is Vouch's to hand out.
CREATE TABLE homeserver_users (
    localpart TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);
