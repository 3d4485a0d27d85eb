//! The hive's MCP tools by name, defined once: the MCP server serves them
//! (its tests check it serves exactly these), the harness allows them
//! (`--allowedTools`), and the tally of a turn counts them.
//!
//! claude names a tool of an MCP server `mcp__<server>__<tool>`; the hive's
//! server is [`SERVER`], so `send` reaches the model as `mcp__hyperhive__send`.

/// The hive's MCP server name.
pub const SERVER: &str = "hyperhive";

/// What claude puts before the name of each of the hive's tools.
pub const PREFIX: &str = "mcp__hyperhive__";

/// One of the hive's MCP tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tool {
    Send,
    Recv,
    Status,
    SetStatus,
    Nap,
    RequestInitConfig,
    RequestSpawn,
    RequestApplyCommit,
    AskOperator,
    Schedule,
}

impl Tool {
    /// The tools every agent gets, whatever its config says.
    pub const AGENT: [Tool; 5] = [
        Self::Send,
        Self::Recv,
        Self::Status,
        Self::SetStatus,
        Self::Nap,
    ];

    /// The tools only the manager gets.
    pub const MANAGER: [Tool; 5] = [
        Self::RequestInitConfig,
        Self::RequestSpawn,
        Self::RequestApplyCommit,
        Self::AskOperator,
        Self::Schedule,
    ];

    /// The name the MCP server serves it under (`send`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Recv => "recv",
            Self::Status => "status",
            Self::SetStatus => "set_status",
            Self::Nap => "nap",
            Self::RequestInitConfig => "request_init_config",
            Self::RequestSpawn => "request_spawn",
            Self::RequestApplyCommit => "request_apply_commit",
            Self::AskOperator => "ask_operator",
            Self::Schedule => "schedule",
        }
    }

    /// The name claude knows it by (`mcp__hyperhive__send`).
    pub const fn qualified(self) -> &'static str {
        match self {
            Self::Send => "mcp__hyperhive__send",
            Self::Recv => "mcp__hyperhive__recv",
            Self::Status => "mcp__hyperhive__status",
            Self::SetStatus => "mcp__hyperhive__set_status",
            Self::Nap => "mcp__hyperhive__nap",
            Self::RequestInitConfig => "mcp__hyperhive__request_init_config",
            Self::RequestSpawn => "mcp__hyperhive__request_spawn",
            Self::RequestApplyCommit => "mcp__hyperhive__request_apply_commit",
            Self::AskOperator => "mcp__hyperhive__ask_operator",
            Self::Schedule => "mcp__hyperhive__schedule",
        }
    }

    /// The tools an agent may call: every agent's, and the manager's for the manager.
    pub fn granted(manager: bool) -> impl Iterator<Item = Tool> {
        let extra: &[Tool] = if manager { &Self::MANAGER } else { &[] };
        Self::AGENT.into_iter().chain(extra.iter().copied())
    }

    /// The tool claude calls `name`, if it is one of the hive's.
    pub fn from_qualified(name: &str) -> Option<Tool> {
        Self::AGENT
            .into_iter()
            .chain(Self::MANAGER)
            .find(|t| t.qualified() == name)
    }
}

/// A tool name as a person reads it: the hive's without [`PREFIX`] (`send`),
/// any other as claude names it.
pub fn short_name(name: &str) -> &str {
    name.strip_prefix(PREFIX).unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names_are_the_prefix_and_the_name() {
        assert_eq!(PREFIX, format!("mcp__{SERVER}__"));
        for t in Tool::AGENT.into_iter().chain(Tool::MANAGER) {
            assert_eq!(t.qualified(), format!("{PREFIX}{}", t.name()));
            assert_eq!(Tool::from_qualified(t.qualified()), Some(t));
            assert_eq!(short_name(t.qualified()), t.name());
        }
        assert_eq!(Tool::from_qualified("Bash"), None);
        assert_eq!(short_name("Bash"), "Bash");
    }

    #[test]
    fn only_the_manager_is_granted_the_managers_tools() {
        let names = |m| Tool::granted(m).map(Tool::name).collect::<Vec<_>>();
        assert_eq!(
            names(false),
            ["send", "recv", "status", "set_status", "nap"]
        );
        assert_eq!(names(true).len(), 10);
        assert!(names(true).contains(&"ask_operator"));
    }
}
