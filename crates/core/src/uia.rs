//! The User-Interactive Authentication engine's rules: which operation a session belongs
//! to, which stage may come next, and when a flow is complete.
//!
//! Loading and saving sessions, and checking what a stage's `auth` dict proves (a password,
//! a registration token, a validated email), happen outside; this module decides.

use std::fmt;
use std::str::FromStr;

/// `m.login.dummy`.
pub const DUMMY: &str = "m.login.dummy";
/// `m.login.password`.
pub const PASSWORD: &str = "m.login.password";
/// `m.login.registration_token`.
pub const REGISTRATION_TOKEN: &str = "m.login.registration_token";
/// `m.login.terms`.
pub const TERMS: &str = "m.login.terms";
/// `m.login.email.identity`.
pub const EMAIL_IDENTITY: &str = "m.login.email.identity";
/// `m.login.msisdn`.
pub const MSISDN: &str = "m.login.msisdn";

/// The stages that are only valid on `/register` (spec: registration token and terms).
pub const REGISTRATION_ONLY: &[&str] = &[REGISTRATION_TOKEN, TERMS];

/// The operation a UIA session was started for. A session is bound to it: a session opened
/// by `/register` cannot authorise `/account/deactivate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `POST /register`.
    Register,
    /// `POST /account/password` with an access token.
    ChangePassword,
    /// `POST /account/password` without an access token (forgotten password).
    ResetPassword,
    /// `POST /account/deactivate`.
    Deactivate,
    /// `DELETE /devices/{deviceId}` and `POST /delete_devices`.
    DeleteDevices,
    /// `POST /account/3pid/add`.
    AddThreepid,
}

impl Operation {
    /// Every operation, for configuration checks.
    pub const ALL: [Operation; 6] = [
        Operation::Register,
        Operation::ChangePassword,
        Operation::ResetPassword,
        Operation::Deactivate,
        Operation::DeleteDevices,
        Operation::AddThreepid,
    ];

    /// The stable name used in configuration and storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Register => "register",
            Operation::ChangePassword => "change_password",
            Operation::ResetPassword => "reset_password",
            Operation::Deactivate => "deactivate",
            Operation::DeleteDevices => "delete_devices",
            Operation::AddThreepid => "add_threepid",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Operation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Operation::ALL
            .into_iter()
            .find(|op| op.as_str() == s)
            .ok_or_else(|| format!("unknown UIA operation '{s}'"))
    }
}

/// One flow: the stages to complete, in order.
pub type Flow = Vec<String>;

/// Why a stage is not accepted now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageRejection {
    /// No offered flow contains the stage.
    #[error("the authentication type {0} is not offered for this request")]
    NotOffered(String),
    /// The stage is offered, but not next in any flow consistent with what is completed.
    #[error("the authentication stage {0} is out of order; complete the earlier stages first")]
    OutOfOrder(String),
}

/// Decides whether `stage` may be attempted now: some offered flow must contain every
/// completed stage and have `stage` as its next uncompleted one. Re-attempting a stage that is
/// already completed is allowed (the spec lets a client retry it).
pub fn check_stage(
    flows: &[Flow],
    completed: &[String],
    stage: &str,
) -> Result<(), StageRejection> {
    if completed.iter().any(|c| c == stage) {
        return Ok(());
    }
    let offering: Vec<&Flow> = flows
        .iter()
        .filter(|f| f.iter().any(|s| s == stage))
        .collect();
    if offering.is_empty() {
        return Err(StageRejection::NotOffered(stage.to_owned()));
    }
    let in_order = offering.iter().any(|flow| {
        let done_all = completed.iter().all(|c| flow.contains(c));
        let next = flow.iter().find(|s| !completed.contains(s));
        done_all && next.is_some_and(|s| s == stage)
    });
    if in_order {
        Ok(())
    } else {
        Err(StageRejection::OutOfOrder(stage.to_owned()))
    }
}

/// The first offered flow whose stages are all completed, if any.
pub fn completed_flow<'a>(flows: &'a [Flow], completed: &[String]) -> Option<&'a Flow> {
    flows
        .iter()
        .find(|flow| flow.iter().all(|s| completed.contains(s)))
}

/// What registration asks for, before the flows are built.
#[derive(Debug, Clone, Default)]
pub struct RegistrationRequirements {
    /// `m.login.registration_token` is required.
    pub token: bool,
    /// `m.login.terms` is required (policies are configured).
    pub terms: bool,
    /// 3PID stages of which one must be completed (e.g. `[m.login.email.identity]`); empty
    /// when no 3PID is required.
    pub required_3pid_stages: Vec<String>,
    /// 3PID stages offered beside the plain flow when no 3PID is required.
    pub optional_3pid_stages: Vec<String>,
}

/// Builds the registration flows. Cheap gates (token, terms) come first so that nobody is
/// sent a mail before passing them. A flow that would otherwise be empty is `[m.login.dummy]`,
/// because UIA never succeeds without some stage.
pub fn registration_flows(req: &RegistrationRequirements) -> Vec<Flow> {
    let mut gates: Vec<String> = Vec::new();
    if req.token {
        gates.push(REGISTRATION_TOKEN.to_owned());
    }
    if req.terms {
        gates.push(TERMS.to_owned());
    }
    let with = |last: &str| {
        let mut flow = gates.clone();
        flow.push(last.to_owned());
        flow
    };
    if !req.required_3pid_stages.is_empty() {
        return req.required_3pid_stages.iter().map(|s| with(s)).collect();
    }
    let mut flows = vec![if gates.is_empty() {
        vec![DUMMY.to_owned()]
    } else {
        gates.clone()
    }];
    flows.extend(req.optional_3pid_stages.iter().map(|s| with(s)));
    flows
}

/// A stored UIA session as the engine sees it.
#[derive(Debug, Clone)]
pub struct UiaSession {
    /// The opaque session ID given to the client.
    pub id: String,
    /// What the session may authorise.
    pub operation: Operation,
    /// For operations by a logged-in user, whose session it is.
    pub user_id: Option<String>,
    /// When it stops being usable (ms since the epoch).
    pub expires_at: i64,
    /// Completed stages, in the order they were completed.
    pub completed: Vec<String>,
    /// A digest of what the starting request asked for (the new password, the devices to
    /// delete, …); `None` where nothing needs binding.
    pub binding: Option<String>,
}

/// Why a session given by the client cannot be used for this request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionMismatch {
    /// The session has expired.
    #[error("the authentication session has expired; start again")]
    Expired,
    /// The session was started by another operation or another user.
    #[error("the requested operation has changed during the authentication session")]
    OtherOperation,
    /// The same operation, but asking for something else than the request that started
    /// the session.
    #[error("the request has changed during the authentication session; start again")]
    OtherRequest,
}

impl UiaSession {
    /// Checks that this session may serve `operation` for `user_id` at `now_ms`.
    pub fn check_use(
        &self,
        operation: Operation,
        user_id: Option<&str>,
        binding: Option<&str>,
        now_ms: i64,
    ) -> Result<(), SessionMismatch> {
        if now_ms >= self.expires_at {
            return Err(SessionMismatch::Expired);
        }
        if self.operation != operation || self.user_id.as_deref() != user_id {
            return Err(SessionMismatch::OtherOperation);
        }
        if self.binding.as_deref() != binding {
            return Err(SessionMismatch::OtherRequest);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flows(f: &[&[&str]]) -> Vec<Flow> {
        f.iter()
            .map(|fl| fl.iter().map(|s| (*s).to_owned()).collect())
            .collect()
    }

    fn done(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn stages_must_be_offered_and_in_order() {
        let f = flows(&[&[REGISTRATION_TOKEN, TERMS, EMAIL_IDENTITY]]);
        assert_eq!(check_stage(&f, &[], REGISTRATION_TOKEN), Ok(()));
        assert_eq!(
            check_stage(&f, &[], EMAIL_IDENTITY),
            Err(StageRejection::OutOfOrder(EMAIL_IDENTITY.into()))
        );
        assert_eq!(check_stage(&f, &done(&[REGISTRATION_TOKEN]), TERMS), Ok(()));
        assert_eq!(
            check_stage(&f, &[], DUMMY),
            Err(StageRejection::NotOffered(DUMMY.into()))
        );
        // Retrying a completed stage is allowed.
        assert_eq!(
            check_stage(&f, &done(&[REGISTRATION_TOKEN]), REGISTRATION_TOKEN),
            Ok(())
        );
    }

    #[test]
    fn alternative_flows() {
        let f = flows(&[&[DUMMY], &[EMAIL_IDENTITY]]);
        assert_eq!(check_stage(&f, &[], EMAIL_IDENTITY), Ok(()));
        assert_eq!(check_stage(&f, &[], DUMMY), Ok(()));
        assert_eq!(completed_flow(&f, &done(&[EMAIL_IDENTITY])), Some(&f[1]));
        assert_eq!(completed_flow(&f, &[]), None);
        let f = flows(&[&[PASSWORD, DUMMY]]);
        assert_eq!(completed_flow(&f, &done(&[PASSWORD])), None);
        assert!(completed_flow(&f, &done(&[PASSWORD, DUMMY])).is_some());
    }

    #[test]
    fn registration_flow_building() {
        let none = RegistrationRequirements::default();
        assert_eq!(registration_flows(&none), flows(&[&[DUMMY]]));
        let gated = RegistrationRequirements {
            token: true,
            terms: true,
            ..Default::default()
        };
        assert_eq!(
            registration_flows(&gated),
            flows(&[&[REGISTRATION_TOKEN, TERMS]])
        );
        let email_required = RegistrationRequirements {
            token: true,
            required_3pid_stages: vec![EMAIL_IDENTITY.into(), MSISDN.into()],
            ..Default::default()
        };
        assert_eq!(
            registration_flows(&email_required),
            flows(&[
                &[REGISTRATION_TOKEN, EMAIL_IDENTITY],
                &[REGISTRATION_TOKEN, MSISDN]
            ])
        );
        let email_optional = RegistrationRequirements {
            optional_3pid_stages: vec![EMAIL_IDENTITY.into()],
            ..Default::default()
        };
        assert_eq!(
            registration_flows(&email_optional),
            flows(&[&[DUMMY], &[EMAIL_IDENTITY]])
        );
    }

    #[test]
    fn sessions_are_bound_to_operation_user_and_time() {
        let s = UiaSession {
            id: "s".into(),
            operation: Operation::Deactivate,
            user_id: Some("@a:x".into()),
            expires_at: 100,
            completed: vec![],
            binding: Some("b1".into()),
        };
        assert_eq!(
            s.check_use(Operation::Deactivate, Some("@a:x"), Some("b1"), 99),
            Ok(())
        );
        assert_eq!(
            s.check_use(Operation::Deactivate, Some("@a:x"), Some("b2"), 99),
            Err(SessionMismatch::OtherRequest)
        );
        assert_eq!(
            s.check_use(Operation::Deactivate, Some("@a:x"), Some("b1"), 100),
            Err(SessionMismatch::Expired)
        );
        assert_eq!(
            s.check_use(Operation::Register, None, Some("b1"), 0),
            Err(SessionMismatch::OtherOperation)
        );
        assert_eq!(
            s.check_use(Operation::Deactivate, Some("@b:x"), Some("b1"), 0),
            Err(SessionMismatch::OtherOperation)
        );
        assert_eq!("delete_devices".parse(), Ok(Operation::DeleteDevices));
        assert!("nope".parse::<Operation>().is_err());
    }
}
