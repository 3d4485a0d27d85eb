//! Secrets: values the operator hands to agents' claude as environment
//! variables (`hive-c0re secret set`), hive-wide or for one agent.
//!
//! A secret's value is never printed: [`SecretValue`] and [`Secrets`] show
//! names only in `Debug`, so no log line or error can carry one by accident.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest secret name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Largest secret value, in bytes.
pub const MAX_VALUE_BYTES: usize = 16 * 1024;
/// Values shorter than this are not redacted from what agents report: a
/// short value (`1`, `true`, `eu`) is ordinary text everywhere, and replacing
/// it would garble events without protecting anything a credential needs.
pub const MIN_REDACTED_BYTES: usize = 8;

/// The secrets that are claude credentials: one of them lets an agent parked
/// in `needs_login` work.
pub const CREDENTIALS: [&str; 2] = ["ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN"];

/// Variables hyperhive itself sets for claude or the harness: a secret may
/// not replace them (the model endpoint, where claude keeps its files, the
/// hive's own switches). Names starting with `HIVE_` are the hive's as well.
pub const RESERVED: [&str; 12] = [
    "ANTHROPIC_BASE_URL",
    "HOME",
    "PATH",
    "USER",
    "SHELL",
    "PWD",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
    "DISABLE_TELEMETRY",
    "DISABLE_AUTOUPDATER",
    "MCP_TOOL_TIMEOUT",
    "RUST_LOG",
    "LD_PRELOAD",
];

/// Prefix of the hive's own variables.
pub const RESERVED_PREFIX: &str = "HIVE_";

/// Prefix of the secrets kept from every agent: hive-c0re's own (a webhook's
/// key or token). An agent that had one could sign a forged notification.
pub const OPERATOR_ONLY_PREFIX: &str = "WEBHOOK_";

/// Why a secret name or value was refused: a sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SecretError(pub String);

/// A validated secret name: an environment variable name hyperhive does not set itself.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct SecretName(String);

impl SecretName {
    /// Checks `s`: letters, digits and `_`, not starting with a digit, and not a
    /// variable hyperhive sets for claude.
    pub fn parse(s: &str) -> Result<Self, SecretError> {
        if s.is_empty()
            || s.len() > MAX_NAME_BYTES
            || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || s.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(SecretError(format!(
                "{s:?} is not an environment variable name: use letters, digits and '_' \
                 (not starting with a digit, at most {MAX_NAME_BYTES} bytes), e.g. ANTHROPIC_API_KEY"
            )));
        }
        if RESERVED.contains(&s) || s.starts_with(RESERVED_PREFIX) {
            return Err(SecretError(format!(
                "{s} is set by hyperhive itself for claude (the model endpoint, claude's home, \
                 the hive's own HIVE_* variables): a secret cannot replace it; pick another name"
            )));
        }
        Ok(Self(s.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A secret's value; `Debug` does not show it.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct SecretValue(String);

impl SecretValue {
    /// Checks a value: not empty, no NUL (an environment variable cannot hold
    /// one), at most [`MAX_VALUE_BYTES`].
    pub fn parse(s: String) -> Result<Self, SecretError> {
        if s.is_empty() {
            return Err(SecretError(
                "the secret's value is empty: give the value on stdin, e.g. printf %s \"$KEY\" | hive-c0re secret set NAME".into(),
            ));
        }
        if s.contains('\0') {
            return Err(SecretError(
                "the secret's value holds a NUL byte, which no environment variable can carry"
                    .into(),
            ));
        }
        if s.len() > MAX_VALUE_BYTES {
            return Err(SecretError(format!(
                "the secret's value is {} bytes, over the limit of {MAX_VALUE_BYTES}",
                s.len()
            )));
        }
        Ok(Self(s))
    }

    /// The value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue({} bytes)", self.0.len())
    }
}

impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The secrets one agent's claude gets, by name (hive-wide ones with the
/// agent's own over them); `Debug` shows the names only.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secrets(pub BTreeMap<String, String>);

impl Secrets {
    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when one of them is a claude credential ([`CREDENTIALS`]).
    pub fn has_credential(&self) -> bool {
        CREDENTIALS
            .iter()
            .any(|k| self.0.get(*k).is_some_and(|v| !v.trim().is_empty()))
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_env_vars_the_hive_does_not_set() {
        assert!(SecretName::parse("ANTHROPIC_API_KEY").is_ok());
        assert!(SecretName::parse("github_token2").is_ok());
        for bad in ["", "2FA", "MY-KEY", "A B", "KEY=1", "ÄPI"] {
            let e = SecretName::parse(bad).unwrap_err().0;
            assert!(e.contains("not an environment variable name"), "{bad}: {e}");
        }
        for reserved in ["ANTHROPIC_BASE_URL", "HOME", "PATH", "HIVE_AGENT_STATE"] {
            let e = SecretName::parse(reserved).unwrap_err().0;
            assert!(e.contains("set by hyperhive itself"), "{reserved}: {e}");
        }
        let e = serde_json::from_str::<SecretName>("\"HOME\"").unwrap_err();
        assert!(e.to_string().contains("set by hyperhive itself"), "{e}");
    }

    #[test]
    fn values_never_show_in_debug() {
        let v = SecretValue::parse("sk-very-secret".into()).unwrap();
        assert_eq!(format!("{v:?}"), "SecretValue(14 bytes)");
        let s = Secrets([("K".to_owned(), "sk-very-secret".to_owned())].into());
        assert_eq!(format!("{s:?}"), "{\"K\"}");
        assert!(SecretValue::parse(String::new()).is_err());
        assert!(SecretValue::parse("a\0b".into()).is_err());
    }

    #[test]
    fn a_credential_is_one_of_the_two() {
        let s = |k: &str| Secrets([(k.to_owned(), "x".to_owned())].into());
        assert!(s("ANTHROPIC_API_KEY").has_credential());
        assert!(s("CLAUDE_CODE_OAUTH_TOKEN").has_credential());
        assert!(!s("GITHUB_TOKEN").has_credential());
    }
}
