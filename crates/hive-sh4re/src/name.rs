//! The one validator of agent names; every path built from a name starts here.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The operator's inbox, and the sender of what the operator says.
pub const OPERATOR: &str = "operator";
/// The sender of hive-c0re's own notices.
pub const SYSTEM: &str = "system";
/// Names an agent can never take: the operator's inbox and hive-c0re's own notices.
pub const RESERVED: [&str; 2] = [OPERATOR, SYSTEM];

/// Longest allowed agent name, in characters.
pub const MAX_NAME_LEN: usize = 31;

/// Why a string is not a valid agent name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error(
        "an agent name cannot be empty: use 1 to 31 characters of a-z, 0-9 and '-', starting with a letter"
    )]
    Empty,
    /// The name is 32 characters or longer.
    #[error("agent name {0:?} is too long ({1} characters): use at most 31")]
    TooLong(String, usize),
    /// The name does not start with a lowercase ASCII letter.
    #[error("agent name {0:?} must start with a lowercase letter a-z")]
    BadStart(String),
    /// The name contains a character outside `[a-z0-9-]`.
    #[error("agent name {0:?} contains {1:?}: only a-z, 0-9 and '-' are allowed")]
    BadChar(String, char),
    /// The name is reserved for the hive itself.
    #[error("{0:?} is reserved by the hive and cannot name an agent: pick another name")]
    Reserved(String),
}

/// A validated agent name: `^[a-z][a-z0-9-]{0,30}$`, not reserved.
///
/// It is safe to use as a path component and as a container name suffix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgentName(String);

impl AgentName {
    /// The name of the manager agent.
    pub const MANAGER: &'static str = "manager";

    /// Validates `s` as an agent name.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let printable: String = s.chars().take(40).collect();
        let mut chars = s.chars();
        let first = chars.next().ok_or(NameError::Empty)?;
        let len = s.chars().count();
        if len > MAX_NAME_LEN {
            return Err(NameError::TooLong(printable, len));
        }
        if !first.is_ascii_lowercase() {
            return Err(NameError::BadStart(printable));
        }
        if let Some(bad) =
            chars.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(NameError::BadChar(printable, bad));
        }
        if RESERVED.contains(&s) {
            return Err(NameError::Reserved(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }

    /// The manager's name.
    pub fn manager() -> Self {
        Self(Self::MANAGER.to_owned())
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the manager agent.
    pub fn is_manager(&self) -> bool {
        self.0 == Self::MANAGER
    }

    /// The container (machine) name: `h-<name>`.
    pub fn container(&self) -> String {
        format!("h-{}", self.0)
    }
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for AgentName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::parse(&s)
    }
}

impl From<AgentName> for String {
    fn from(n: AgentName) -> String {
        n.0
    }
}

impl std::str::FromStr for AgentName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::parse(s)
    }
}

/// Where a message can go or come from: an agent, the operator, or the hive itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Mailbox {
    /// The human operator's inbox.
    Operator,
    /// hive-c0re's own notices (crashes, decisions, schedules).
    System,
    /// An agent's inbox.
    Agent(AgentName),
}

impl Mailbox {
    /// Parses `operator`, `system` or a valid agent name.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        match s {
            "operator" => Ok(Self::Operator),
            "system" => Ok(Self::System),
            other => AgentName::parse(other).map(Self::Agent),
        }
    }

    /// The mailbox as it is stored and shown.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Operator => "operator",
            Self::System => "system",
            Self::Agent(n) => n.as_str(),
        }
    }

    /// The class stats group this mailbox in: operator, system, manager or peer.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::System => "system",
            Self::Agent(n) if n.is_manager() => "manager",
            Self::Agent(_) => "peer",
        }
    }

    /// The agent behind this mailbox, if it is one.
    pub fn agent(&self) -> Option<&AgentName> {
        match self {
            Self::Agent(n) => Some(n),
            _ => None,
        }
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Mailbox {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::parse(&s)
    }
}

impl std::str::FromStr for Mailbox {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::parse(s)
    }
}

impl From<Mailbox> for String {
    fn from(m: Mailbox) -> String {
        m.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for ok in [
            "a",
            "alice",
            "bob-2",
            "x1234567890123456789012345678901"[..31].as_ref(),
        ] {
            assert_eq!(AgentName::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_dotdot_slash_upper_empty_nul_and_long() {
        assert_eq!(AgentName::parse(""), Err(NameError::Empty));
        assert!(matches!(
            AgentName::parse(".."),
            Err(NameError::BadStart(_))
        ));
        assert!(matches!(
            AgentName::parse("a/b"),
            Err(NameError::BadChar(_, '/'))
        ));
        assert!(matches!(AgentName::parse("A"), Err(NameError::BadStart(_))));
        assert!(matches!(
            AgentName::parse("a\0b"),
            Err(NameError::BadChar(_, '\0'))
        ));
        assert!(matches!(
            AgentName::parse(&"a".repeat(32)),
            Err(NameError::TooLong(_, 32))
        ));
        assert!(matches!(
            AgentName::parse("a.b"),
            Err(NameError::BadChar(_, '.'))
        ));
    }

    #[test]
    fn refuses_reserved_names() {
        assert!(matches!(
            AgentName::parse("operator"),
            Err(NameError::Reserved(_))
        ));
        assert!(matches!(
            AgentName::parse("system"),
            Err(NameError::Reserved(_))
        ));
    }

    #[test]
    fn errors_read_as_sentences() {
        let e = AgentName::parse("a/b").unwrap_err().to_string();
        assert!(e.contains("only a-z, 0-9 and '-' are allowed"), "{e}");
    }

    #[test]
    fn mailbox_parses_reserved_and_agents() {
        assert_eq!(Mailbox::parse("operator").unwrap(), Mailbox::Operator);
        assert_eq!(Mailbox::parse("system").unwrap(), Mailbox::System);
        assert_eq!(
            Mailbox::parse("bob").unwrap().agent().unwrap().as_str(),
            "bob"
        );
        assert!(Mailbox::parse("../x").is_err());
    }

    #[test]
    fn deserializing_validates() {
        let r: Result<AgentName, _> = serde_json::from_str("\"a/b\"");
        assert!(r.is_err());
    }
}
