//! The manager's tools: proposals the operator approves, and questions to the operator.
//!
//! They are listed only when the server runs for the manager; hive-c0re
//! refuses them from any other agent anyway.

use hive_sh4re::AgentName;
use hive_sh4re::agent::AgentRequest;
use hive_sh4re::limits::{ASK_MAX_TTL_SECONDS, check_description, check_question};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;

use super::{HiveTools, render};

// Optional fields read `#[serde(default, skip_serializing_if)]` plus
// `#[schemars(with = ...)]` so their schema is the plain type, without
// `null`, as in agent_tools.

/// Arguments of `request_init_config`.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct InitConfigArgs {
    /// The future agent's name: 1 to 31 characters of a-z, 0-9 and '-', starting with a letter.
    pub name: String,
}

/// Arguments of `request_spawn`.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct SpawnArgs {
    /// The agent to start, whose config repo `request_init_config` created.
    pub name: String,
    /// Why the hive needs this agent, shown to the operator with the approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub description: Option<String>,
    /// The node (host) the agent should live on, when the hive has several (see its status); leave it out for the node that approves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub node: Option<String>,
}

/// Arguments of `request_apply_commit`.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct ApplyCommitArgs {
    /// The agent whose configuration changes.
    pub agent: String,
    /// The commit of that agent's config repo to deploy (a sha; `HEAD` works too).
    pub sha: String,
    /// What the change does and why, shown to the operator with the approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub description: Option<String>,
}

/// Arguments of `ask_operator`.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct AskArgs {
    /// The question, self-contained: the operator may read it hours later.
    pub question: String,
    /// Suggested answers the dashboard offers as buttons; the operator may still write another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Vec<String>")]
    pub options: Option<Vec<String>>,
    /// How long to wait for an answer, in seconds: 1 to 604800 (7 days), default 3600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u64", range(min = 1, max = ASK_MAX_TTL_SECONDS))]
    pub ttl_seconds: Option<u64>,
}

/// Arguments of `schedule`.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct ScheduleArgs {
    /// The agent that receives the text (as a message from `system`).
    pub agent: String,
    /// When: `30s` or `2h` (once, from now), an RFC 3339 time (once), `every:15m` (repeating) or `cron:0 0 9 * * Mon-Fri` (sec min hour day month weekday).
    pub when: String,
    /// What the agent is told when it is due.
    pub text: String,
}

#[tool_router(router = manager_tools, vis = "pub(super)")]
impl HiveTools {
    #[tool(
        description = "Create the configuration repo of a future agent: a git repo holding a default agent.toml (model, allowed_tools, allowed_recipients, env, mcp_servers, prompt). Returns the repo's path: edit agent.toml there, commit, then call request_spawn. Refused when the name is invalid or taken."
    )]
    async fn request_init_config(
        &self,
        Parameters(args): Parameters<InitConfigArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<String, String> {
        let name = check_name(&args.name)?;
        let resp = self
            .ask(AgentRequest::RequestInitConfig { name: name.clone() }, &ctx)
            .await?;
        Ok(render::text_or(resp.text, || {
            format!("created the config repo of {name}")
        }))
    }

    #[tool(
        description = "Ask the operator to start a new agent with the agent.toml of the head commit of its config repo (made by request_init_config), as it reads now: what you commit later does not change this request. Returns at once with the approval id; the operator's decision arrives later as a message from `system`. `description` tells the operator why the agent is needed."
    )]
    async fn request_spawn(
        &self,
        Parameters(args): Parameters<SpawnArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<String, String> {
        let name = check_name(&args.name)?;
        let req = AgentRequest::RequestSpawn {
            name,
            description: description(args.description)?,
            node: non_blank(args.node),
        };
        let resp = self.ask(req, &ctx).await?;
        Ok(render::text_or(resp.text, || {
            "approval queued: the operator decides".into()
        }))
    }

    #[tool(
        description = "Ask the operator to deploy a commit of an agent's config repo: its agent.toml is read now, the operator sees that text's diff against the deployed config, and approving deploys exactly that text and restarts the agent. Commit your edit to agent.toml first and pass its sha. Returns at once with the approval id; the decision arrives later as a message from `system`. `description` says what changes and why."
    )]
    async fn request_apply_commit(
        &self,
        Parameters(args): Parameters<ApplyCommitArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<String, String> {
        let agent = check_name(&args.agent)?;
        let sha = args.sha.trim();
        if sha.is_empty() {
            return Err(
                "sha is empty: give the commit of the agent's config repo to deploy".into(),
            );
        }
        let req = AgentRequest::RequestApplyCommit {
            agent,
            sha: sha.to_owned(),
            description: description(args.description)?,
        };
        let resp = self.ask(req, &ctx).await?;
        Ok(render::text_or(resp.text, || {
            "approval queued: the operator decides".into()
        }))
    }

    #[tool(
        description = "Schedule a prompt to an agent: at `when` (once, or repeating with every:/cron:) the agent receives `text` as a message from `system`, marked `[scheduled by manager]`, and wakes for it. Use it for reminders, periodic check-ins and follow-ups. A slot missed while the hive was down is delivered once, not replayed. Returns the schedule id; the operator can list and remove schedules."
    )]
    async fn schedule(
        &self,
        Parameters(args): Parameters<ScheduleArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<String, String> {
        let agent = check_name(&args.agent)?;
        if args.text.trim().is_empty() {
            return Err("text is empty: write what the agent should be told".into());
        }
        if args.when.trim().is_empty() {
            return Err("when is empty: write e.g. 30s, every:15m or an RFC 3339 time".into());
        }
        let req = AgentRequest::Schedule {
            agent,
            when: args.when.trim().to_owned(),
            text: args.text,
        };
        let resp = self.ask(req, &ctx).await?;
        Ok(render::text_or(resp.text, || "schedule added".into()))
    }

    #[tool(
        description = "Ask the human operator a question and wait for the answer. Blocks until the operator answers, cancels, or `ttl_seconds` pass (default 3600, at most 604800 = 7 days); your turn waits meanwhile. `options` are suggested answers. Returns the operator's answer as text, or a text starting with `[no answer:` when the deadline passed or the question was cancelled. For anything that can wait, prefer send to `operator` and carry on."
    )]
    async fn ask_operator(
        &self,
        Parameters(args): Parameters<AskArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<String, String> {
        let req = check_ask(args)?;
        let resp = self.ask(req, &ctx).await?;
        Ok(render::text_or(resp.text, || {
            "[no answer: hive-c0re returned no text]".into()
        }))
    }
}

/// Validates an agent name with the hive's one validator.
pub(super) fn check_name(name: &str) -> Result<String, String> {
    AgentName::parse(name.trim())
        .map(String::from)
        .map_err(|e| format!("bad agent name: {e}"))
}

/// Drops a description that says nothing.
fn non_blank(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// A description that says something, within its limit.
fn description(s: Option<String>) -> Result<Option<String>, String> {
    let d = non_blank(s);
    if let Some(d) = &d {
        check_description(d)?;
    }
    Ok(d)
}

/// Validates `ask_operator`'s arguments into the request.
pub(super) fn check_ask(args: AskArgs) -> Result<AgentRequest, String> {
    let question = args.question.trim();
    let options: Vec<String> = args
        .options
        .unwrap_or_default()
        .iter()
        .map(|o| o.trim().to_owned())
        .collect();
    check_question(question, &options)?;
    if let Some(ttl) = args.ttl_seconds
        && !(1..=ASK_MAX_TTL_SECONDS).contains(&ttl)
    {
        return Err(format!(
            "ttl_seconds must be between 1 and {ASK_MAX_TTL_SECONDS} (7 days); {ttl} is out of range"
        ));
    }
    Ok(AgentRequest::AskOperator {
        question: question.to_owned(),
        options,
        ttl_seconds: args.ttl_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(
        question: &str,
        options: Option<Vec<&str>>,
        ttl: Option<u64>,
    ) -> Result<AgentRequest, String> {
        let options = options.map(|o| o.into_iter().map(String::from).collect());
        check_ask(AskArgs {
            question: question.into(),
            options,
            ttl_seconds: ttl,
        })
    }

    #[test]
    fn names_go_through_the_hive_validator() {
        assert_eq!(check_name(" bob "), Ok("bob".into()));
        assert!(check_name("operator").unwrap_err().contains("reserved"));
        assert!(
            check_name("../x")
                .unwrap_err()
                .starts_with("bad agent name")
        );
    }

    #[test]
    fn ask_builds_the_request() {
        let req = ask(" Ship it? ", Some(vec!["yes", " no "]), Some(60));
        let want = AgentRequest::AskOperator {
            question: "Ship it?".into(),
            options: vec!["yes".into(), "no".into()],
            ttl_seconds: Some(60),
        };
        assert_eq!(req, Ok(want));
        assert!(ask("q", None, None).is_ok());
    }

    #[test]
    fn ask_refuses_what_hive_c0re_would() {
        assert!(ask(" ", None, None).unwrap_err().contains("empty"));
        assert!(
            ask("q", Some(vec!["yes", ""]), None)
                .unwrap_err()
                .contains("option")
        );
        assert!(
            ask("q", None, Some(0))
                .unwrap_err()
                .contains("between 1 and 604800")
        );
        assert!(ask("q", None, Some(ASK_MAX_TTL_SECONDS + 1)).is_err());
        let long = "q".repeat(hive_sh4re::limits::QUESTION_MAX_BYTES + 1);
        assert!(
            ask(&long, None, None)
                .unwrap_err()
                .contains("over the limit")
        );
        assert!(
            ask("q", Some(vec!["a"; 11]), None)
                .unwrap_err()
                .contains("11 options")
        );
    }

    #[test]
    fn blank_descriptions_are_dropped() {
        assert_eq!(non_blank(Some("  ".into())), None);
        assert_eq!(non_blank(Some(" why ".into())), Some("why".into()));
        let long = "d".repeat(hive_sh4re::limits::DESCRIPTION_MAX_BYTES + 1);
        assert!(
            description(Some(long))
                .unwrap_err()
                .contains("over the limit of 4096")
        );
    }
}
