//! The manager's tools on agent.sock: proposals that wait for the operator.

use std::sync::Arc;

use hive_sh4re::agent::{AgentRequest, AgentResponse};
use hive_sh4re::{AgentName, NodeName};

use crate::error::{Error, Result};
use crate::hive::Hive;

/// Handles a manager-only request (the caller checked the sender is the manager).
pub async fn handle(hive: &Arc<Hive>, req: AgentRequest) -> Result<AgentResponse> {
    let parse =
        |n: &str| AgentName::parse(n).map_err(|e| Error::refused(format!("bad agent name: {e}")));
    if matches!(
        req,
        AgentRequest::RequestInitConfig { .. }
            | AgentRequest::RequestSpawn { .. }
            | AgentRequest::RequestApplyCommit { .. }
    ) {
        hive.take_manager_request()?;
    }
    let text = match req {
        AgentRequest::RequestInitConfig { name } => {
            let name = parse(&name)?;
            hive.init_config(&name).await?;
            format!(
                "created the config repo of {name} at {}: edit agent.toml there, commit, then call request_spawn",
                hive.repo_as_the_manager_sees_it(&name)
            )
        }
        AgentRequest::RequestSpawn {
            name,
            description,
            node,
        } => {
            let name = parse(&name)?;
            let node = node
                .as_deref()
                .map(|n| {
                    NodeName::parse(n).map_err(|e| Error::refused(format!("bad node name: {e}")))
                })
                .transpose()?;
            let id = hive
                .request_spawn(
                    &name,
                    Some(&AgentName::manager()),
                    description.as_deref(),
                    node.as_ref(),
                )
                .await?;
            format!(
                "approval #{id} queued: the operator decides; the decision reaches your inbox from system"
            )
        }
        AgentRequest::RequestApplyCommit {
            agent,
            sha,
            description,
        } => {
            let agent = parse(&agent)?;
            let id = hive
                .request_apply_commit(
                    &agent,
                    &sha,
                    description.as_deref(),
                    Some(&AgentName::manager()),
                )
                .await?;
            format!(
                "approval #{id} queued: the operator decides; the decision reaches your inbox from system"
            )
        }
        AgentRequest::Schedule { agent, when, text } => {
            let agent = parse(&agent)?;
            let id = hive
                .schedule_add(&agent, &when, &text, AgentName::MANAGER)
                .await?;
            format!("schedule #{id} added: {agent} will get your text from system at {when}")
        }
        AgentRequest::AskOperator {
            question,
            options,
            ttl_seconds,
        } => {
            hive.ask_operator(&AgentName::manager(), &question, &options, ttl_seconds)
                .await?
        }
        _ => return Err(Error::refused("not a manager request")),
    };
    Ok(AgentResponse {
        text: Some(text),
        ..AgentResponse::ok()
    })
}
