//! `mcp`: the stdio MCP server claude starts, named `hyperhive`, so claude
//! sees `mcp__hyperhive__send`, `mcp__hyperhive__status`, ...
//!
//! Each tool turns into one agent.sock request ([`link`]); hive-c0re's answer
//! becomes plain text ([`render`]). Every failure, a refusal as much as a
//! lost socket, is a tool result with `isError: true` and a sentence the
//! model can act on: the server itself keeps running. stdout is the MCP
//! channel, so nothing here prints; logs go to stderr through `tracing`.

mod agent_tools;
mod link;
mod manager_tools;
mod render;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use hive_sh4re::agent::{AgentRequest, AgentResponse};
use hive_sh4re::tools;
use rmcp::handler::server::tool::ToolRouter;
use rmcp::model::{Implementation, ProgressNotificationParam, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler, ServiceExt as _, tool_handler};
use tokio::io::{AsyncRead, AsyncWrite};

use link::Link;

/// How often a long call (an `ask_operator`) tells claude it is still alive.
///
/// claude aborts a stdio tool call that sends neither a result nor progress
/// for 30 minutes by default; a progress notification restarts that clock.
const KEEPALIVE: Duration = Duration::from_secs(60);

const AGENT_INSTRUCTIONS: &str = "hyperhive connects you to a hive of Claude Code agents, each in its own container, and to the human operator who runs it. \
Messages for you arrive as the prompt of your next turn; write to an agent or to `operator` with send, see who is here with status, and nap when there is nothing to do until later. \
Every tool answers in plain text, and a refusal says what to change.";

const MANAGER_INSTRUCTIONS: &str = " As the manager you also shape the hive: request_init_config then request_spawn propose a new agent, \
request_apply_commit proposes a config change (the operator approves each), and ask_operator waits for the operator's decision.";

/// Serves the hive's tools over stdin/stdout until claude closes them.
pub async fn run(socket: PathBuf, manager: bool) -> anyhow::Result<()> {
    let (stdin, stdout) = rmcp::transport::stdio();
    serve_on(socket, manager, stdin, stdout).await
}

/// Serves the hive's tools over any byte stream pair (tests use in-memory pipes) until the client closes it.
pub async fn serve_on<R, W>(
    socket: PathBuf,
    manager: bool,
    reader: R,
    writer: W,
) -> anyhow::Result<()>
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    tracing::debug!(socket = %socket.display(), manager, "serving MCP");
    let running = HiveTools::new(socket, manager)
        .serve((reader, writer))
        .await
        .context("the MCP client went away before finishing the initialize handshake")?;
    let reason = running
        .waiting()
        .await
        .context("the MCP service task failed")?;
    tracing::debug!(?reason, "MCP session ended");
    Ok(())
}

/// The server: the agent's socket and the tools this agent may use.
struct HiveTools {
    link: Link,
    manager: bool,
    tool_router: ToolRouter<Self>,
}

impl HiveTools {
    fn new(socket: PathBuf, manager: bool) -> Self {
        let mut tool_router = Self::agent_tools();
        if manager {
            tool_router += Self::manager_tools();
        }
        Self {
            link: Link::new(socket),
            manager,
            tool_router,
        }
    }

    /// Sends one request for a tool call; gives up when claude cancels the call.
    async fn ask(
        &self,
        req: AgentRequest,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<AgentResponse, String> {
        let op = op_name(&req);
        let token = ctx.meta.get_progress_token();
        tracing::debug!(op, progress = token.is_some(), "agent.sock request");
        let call = self.link.call(&req);
        tokio::pin!(call);
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
        let mut waited: u64 = 0;
        let result = loop {
            tokio::select! {
                r = &mut call => break r,
                // rmcp keeps running a cancelled handler; dropping `call`
                // closes its connection so nothing waits on our behalf.
                _ = ctx.ct.cancelled() => break Err("the call was cancelled before hive-c0re answered".to_owned()),
                _ = ticks.tick(), if token.is_some() => {
                    waited += KEEPALIVE.as_secs();
                    if let Some(t) = &token {
                        let note = ProgressNotificationParam::new(t.clone(), waited as f64)
                            .with_message(format!("still waiting for hive-c0re after {waited}s"));
                        if let Err(e) = ctx.peer.notify_progress(note).await {
                            tracing::debug!("could not send a progress notification: {e}");
                        }
                    }
                }
            }
        };
        if let Err(e) = &result {
            tracing::info!(op, "tool call failed: {e}");
        }
        result
    }
}

/// The request's name for logs (its `op` on the wire), without serializing a 64 KiB body.
fn op_name(req: &AgentRequest) -> &'static str {
    match req {
        AgentRequest::Send { .. } => "send",
        AgentRequest::Recv { .. } => "recv",
        AgentRequest::Status => "status",
        AgentRequest::SetStatus { .. } => "set_status",
        AgentRequest::Nap { .. } => "nap",
        AgentRequest::RequestInitConfig { .. } => "request_init_config",
        AgentRequest::RequestSpawn { .. } => "request_spawn",
        AgentRequest::RequestApplyCommit { .. } => "request_apply_commit",
        AgentRequest::AskOperator { .. } => "ask_operator",
        _ => "harness request",
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for HiveTools {
    fn get_info(&self) -> ServerConfig {
        let mut instructions = AGENT_INSTRUCTIONS.to_owned();
        if self.manager {
            instructions.push_str(MANAGER_INSTRUCTIONS);
        }
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                tools::SERVER,
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(instructions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hive_sh4re::tools::Tool;

    fn names(manager: bool) -> Vec<String> {
        let mut v: Vec<String> = HiveTools::new("/x".into(), manager)
            .tool_router
            .list_all()
            .into_iter()
            .map(|t| t.name.into())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn agents_get_five_tools_and_the_manager_five_more() {
        assert_eq!(
            names(false),
            ["nap", "recv", "send", "set_status", "status"]
        );
        assert_eq!(
            names(true),
            [
                "ask_operator",
                "nap",
                "recv",
                "request_apply_commit",
                "request_init_config",
                "request_spawn",
                "schedule",
                "send",
                "set_status",
                "status"
            ]
        );
    }

    #[test]
    fn the_server_serves_exactly_the_tools_the_hive_names() {
        for manager in [false, true] {
            let mut want: Vec<String> = Tool::granted(manager)
                .map(|t| t.name().to_owned())
                .collect();
            want.sort();
            assert_eq!(names(manager), want, "manager: {manager}");
        }
    }

    #[test]
    fn tools_tell_the_model_the_hives_limits() {
        use hive_sh4re::limits::*;
        let tools = HiveTools::new("/x".into(), true).tool_router.list_all();
        let text = |name: &str| {
            let t = tools.iter().find(|t| t.name == name).expect(name);
            let schema = serde_json::to_string(&t.input_schema).unwrap();
            format!("{} {schema}", t.description.as_deref().unwrap_or_default())
        };
        assert_eq!(MAX_BODY_BYTES, 64 * 1024, "send says 64 KiB");
        assert!(text("send").contains("64 KiB"));
        let recv = text("recv");
        assert!(
            recv.contains(&format!("1 to {RECV_MAX} (default {RECV_DEFAULT})")),
            "{recv}"
        );
        assert!(recv.contains(&format!("\"maximum\":{RECV_MAX}")), "{recv}");
        let status = text("set_status");
        assert!(
            status.contains(&format!("at most {STATUS_MAX_CHARS} characters")),
            "{status}"
        );
        let nap = text("nap");
        assert!(
            nap.contains(&format!("{NAP_MIN_SECONDS} to {NAP_MAX_SECONDS}")),
            "{nap}"
        );
        assert!(
            nap.contains(&format!("\"maximum\":{NAP_MAX_SECONDS}")),
            "{nap}"
        );
        let ask = text("ask_operator");
        assert!(
            ask.contains(&format!(
                "default {ASK_DEFAULT_TTL_SECONDS}, at most {ASK_MAX_TTL_SECONDS}"
            )),
            "{ask}"
        );
        assert!(
            ask.contains(&format!("\"maximum\":{ASK_MAX_TTL_SECONDS}")),
            "{ask}"
        );
    }

    #[test]
    fn every_tool_explains_itself() {
        for t in HiveTools::new("/x".into(), true).tool_router.list_all() {
            let d = t.description.as_deref().unwrap_or_default();
            assert!(d.len() > 80, "{} has a thin description: {d:?}", t.name);
        }
    }

    #[test]
    fn the_manager_is_told_about_its_tools() {
        let info = HiveTools::new("/x".into(), true).get_info();
        assert_eq!(info.server_info.name, "hyperhive");
        assert!(
            info.instructions
                .as_deref()
                .is_some_and(|i| i.contains("ask_operator"))
        );
        let info = HiveTools::new("/x".into(), false).get_info();
        assert!(
            info.instructions
                .as_deref()
                .is_some_and(|i| !i.contains("ask_operator"))
        );
    }
}
