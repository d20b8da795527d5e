//! PostgreSQL routines: work a hot path would otherwise send in several round trips, done by
//! one call. They are installed when the server starts, after the migrations (which both
//! engines share, so they cannot hold PL/pgSQL). A routine's name carries its version: a
//! routine that changes gets a new name, so two releases running side by side on one
//! database each call their own.

use sqlx::AnyPool;

/// Serialises the installation between instances starting together (PostgreSQL refuses
/// two concurrent `CREATE OR REPLACE` of one function). An arbitrary key of Vouch's own.
const INSTALL_LOCK: i64 = 0x766f_7563_685f_7631;

/// Creates a validation session and queues its message within the send limits, in one
/// statement a client sends as one round trip, committed on its own:
/// - takes the limits' advisory lock (`lock_key`, `NULL` when no limit applies); being its
///   own statement inside the routine, every count after it sees what the lock's previous
///   holders committed;
/// - inserts the session unless a concurrent twin holds its key (`raced`);
/// - counts each limit whose maximum is not `NULL` (recipient, session, country: the order
///   `send_limits::counts` checks them in); one reached removes the session again and
///   answers with the limit's name and its oldest counted message;
/// - otherwise inserts the outbox row (`queued`).
const CREATE_VALIDATION: &str = r"
CREATE OR REPLACE FUNCTION vouch_create_validation_v1(
    s_sid text, s_medium text, s_address text, s_client_secret text, s_purpose text,
    s_token_hash text, s_token_expires_at bigint, s_send_attempt bigint, s_next_link text,
    s_now bigint,
    m_id text, m_channel text, m_recipient text, m_sid text, m_envelope_from text,
    m_message text, m_created_at bigint, m_next_attempt_at bigint, m_country text,
    m_sent_at bigint,
    lock_key bigint,
    recipient_since bigint, recipient_max bigint,
    session_since bigint, session_max bigint,
    country_since bigint, country_max bigint,
    OUT outcome text, OUT oldest bigint)
LANGUAGE plpgsql VOLATILE AS $routine$
DECLARE
    counted bigint;
BEGIN
    IF lock_key IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(lock_key);
    END IF;
    INSERT INTO validation_sessions (sid, medium, address, client_secret, purpose, token_hash,
        token_expires_at, send_attempt, next_link, created_at, updated_at)
    VALUES (s_sid, s_medium, s_address, s_client_secret, s_purpose, s_token_hash,
        s_token_expires_at, s_send_attempt, s_next_link, s_now, s_now)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        outcome := 'raced';
        RETURN;
    END IF;
    IF recipient_max IS NOT NULL THEN
        SELECT COUNT(*), MIN(created_at) INTO counted, oldest FROM outbox
        WHERE recipient = m_recipient AND created_at > recipient_since;
        IF counted >= recipient_max THEN
            outcome := 'recipient';
        END IF;
    END IF;
    IF outcome IS NULL AND session_max IS NOT NULL THEN
        SELECT COUNT(*), MIN(created_at) INTO counted, oldest FROM outbox
        WHERE sid = m_sid AND created_at > session_since;
        IF counted >= session_max THEN
            outcome := 'session';
        END IF;
    END IF;
    IF outcome IS NULL AND country_max IS NOT NULL THEN
        SELECT COUNT(*), MIN(created_at) INTO counted, oldest FROM outbox
        WHERE channel = m_channel AND country = m_country AND created_at > country_since;
        IF counted >= country_max THEN
            outcome := 'country';
        END IF;
    END IF;
    IF outcome IS NOT NULL THEN
        DELETE FROM validation_sessions WHERE sid = s_sid;
        RETURN;
    END IF;
    INSERT INTO outbox (id, channel, recipient, sid, envelope_from, message, created_at,
        next_attempt_at, country, sent_at)
    VALUES (m_id, m_channel, m_recipient, m_sid, m_envelope_from, m_message, m_created_at,
        m_next_attempt_at, m_country, m_sent_at);
    outcome := 'queued';
    oldest := NULL;
END
$routine$";

/// The call of [`CREATE_VALIDATION`]: the session's ten values (`validation::session_params`),
/// the message's ten (`outbox::message_params`), the lock key, then each limit's window
/// (since, max).
pub(crate) const CALL_CREATE_VALIDATION: &str =
    "SELECT outcome, oldest FROM vouch_create_validation_v1(
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
    $21, $22, $23, $24, $25, $26, $27)";

/// Installs the routines (PostgreSQL only), in one transaction under [`INSTALL_LOCK`].
pub(crate) async fn install(pool: &AnyPool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(INSTALL_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(CREATE_VALIDATION).execute(&mut *tx).await?;
    tx.commit().await
}
