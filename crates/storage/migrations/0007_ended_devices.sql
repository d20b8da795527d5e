-- Devices that were signed out, and when: in front of a homeserver that caches token
-- answers for a while, a device ID is not handed out again until those answers are stale.
-- The key is the user ID, a space (never in a user ID) and the device ID.
CREATE TABLE ended_devices (
    device_key TEXT PRIMARY KEY,
    ended_at BIGINT NOT NULL
);
CREATE INDEX ended_devices_ended_at ON ended_devices (ended_at);
