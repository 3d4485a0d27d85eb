//! The one validator of node names: a node is a hive-c0re daemon of a hive
//! (`serve --node`), by default named after its host.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest allowed node name, in characters (a DNS label's limit).
pub const MAX_NODE_LEN: usize = 63;

/// Why a string is not a valid node name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeNameError {
    /// The name is empty.
    #[error(
        "a node name cannot be empty: use 1 to 63 characters of a-z, 0-9, '-' and '.', starting with a letter or digit"
    )]
    Empty,
    /// The name is longer than [`MAX_NODE_LEN`].
    #[error("node name {0:?} is too long ({1} characters): use at most 63")]
    TooLong(String, usize),
    /// The name does not start with a lowercase ASCII letter or a digit.
    #[error("node name {0:?} must start with a lowercase letter a-z or a digit")]
    BadStart(String),
    /// The name contains a character outside `[a-z0-9.-]`.
    #[error("node name {0:?} contains {1:?}: only a-z, 0-9, '-' and '.' are allowed")]
    BadChar(String, char),
}

/// A validated node name: `^[a-z0-9][a-z0-9.-]{0,62}$`, as host names are
/// written in lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeName(String);

impl NodeName {
    /// Validates `s` as a node name.
    pub fn parse(s: &str) -> Result<Self, NodeNameError> {
        let printable: String = s.chars().take(70).collect();
        let mut chars = s.chars();
        let first = chars.next().ok_or(NodeNameError::Empty)?;
        let len = s.chars().count();
        if len > MAX_NODE_LEN {
            return Err(NodeNameError::TooLong(printable, len));
        }
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(NodeNameError::BadStart(printable));
        }
        if let Some(bad) = chars
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
        {
            return Err(NodeNameError::BadChar(printable, bad));
        }
        Ok(Self(s.to_owned()))
    }

    /// The node name a host name gives: the host name in lower case.
    pub fn from_hostname(host: &str) -> Result<Self, NodeNameError> {
        Self::parse(&host.trim().to_ascii_lowercase())
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for NodeName {
    type Error = NodeNameError;
    fn try_from(s: String) -> Result<Self, NodeNameError> {
        Self::parse(&s)
    }
}

impl std::str::FromStr for NodeName {
    type Err = NodeNameError;
    fn from_str(s: &str) -> Result<Self, NodeNameError> {
        Self::parse(s)
    }
}

impl From<NodeName> for String {
    fn from(n: NodeName) -> String {
        n.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_host_names() {
        for ok in [
            "a",
            "alpha",
            "node-2",
            "10.0.0.1",
            "ip-10-0-0-1.ec2.internal",
        ] {
            assert_eq!(NodeName::parse(ok).unwrap().as_str(), ok);
        }
        assert_eq!(NodeName::parse(&"a".repeat(63)).unwrap().as_str().len(), 63);
        assert_eq!(
            NodeName::from_hostname("Build-Box.Example.org\n")
                .unwrap()
                .as_str(),
            "build-box.example.org"
        );
    }

    #[test]
    fn refuses_empty_long_upper_slash_space_and_leading_punctuation() {
        assert_eq!(NodeName::parse(""), Err(NodeNameError::Empty));
        assert!(matches!(
            NodeName::parse(&"a".repeat(64)),
            Err(NodeNameError::TooLong(_, 64))
        ));
        for bad in ["Alpha", "-a", ".a", "..", "_x"] {
            assert!(
                matches!(NodeName::parse(bad), Err(NodeNameError::BadStart(_))),
                "{bad}"
            );
        }
        for (bad, c) in [("a/b", '/'), ("a b", ' '), ("a\0", '\0'), ("aB", 'B')] {
            assert_eq!(
                NodeName::parse(bad),
                Err(NodeNameError::BadChar(bad.to_owned(), c))
            );
        }
        let says = NodeName::parse("a/b").unwrap_err().to_string();
        assert!(says.contains("only a-z, 0-9, '-' and '.'"), "{says}");
    }

    #[test]
    fn serde_checks_the_name() {
        let n: NodeName = serde_json::from_str("\"alpha\"").unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"alpha\"");
        assert!(serde_json::from_str::<NodeName>("\"../x\"").is_err());
    }
}
