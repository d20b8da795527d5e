//! Vouch's outbound mail: minijinja templates (embedded defaults, operator overrides),
//! message composition with lettre, the transports (SMTP, `.eml` files, the log), and the
//! outbox worker that delivers queued mail with retries.
//!
//! Requests never send mail themselves: they write the message to the outbox in the same
//! transaction as the state it belongs to, and the outbox worker (`vouch-outbox`) delivers it.

pub mod compose;
pub mod locales;
pub mod smtp_pool;
pub mod templates;
pub mod transport;

pub use compose::{ComposeError, Composed, Composer};
pub use templates::{
    DeviceLine, LanguageLine, MailContext, OAuthPageContext, PageContext, TemplateError, Templates,
    TermsLink, ThreepidLine,
};
pub use transport::{SendError, Transport};
