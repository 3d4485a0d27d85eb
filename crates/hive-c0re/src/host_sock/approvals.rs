//! Approval and question verbs.

use std::sync::Arc;

use hive_sh4re::host::{Request, Response};

use super::Reply;
use crate::error::Result;
use crate::hive::Hive;

pub(super) async fn handle(hive: &Arc<Hive>, req: Request) -> Result<Reply> {
    Ok(match req {
        Request::Pending => Response {
            approvals: Some(hive.approvals()?),
            ..Response::ok()
        }
        .into(),
        Request::Approve { id } => {
            hive.approve(id).await?;
            Response::ok().into()
        }
        Request::Deny { id, note } => {
            hive.deny(id, note.as_deref())?;
            Response::ok().into()
        }
        Request::InitConfig { name } => {
            hive.init_config(&name)?;
            Response::ok().into()
        }
        Request::RequestSpawn { name, description } => {
            let id = hive.request_spawn(&name, None, description.as_deref())?;
            Response {
                approval_id: Some(id),
                ..Response::ok()
            }
            .into()
        }
        Request::RequestApplyCommit {
            agent,
            sha,
            description,
        } => {
            let id = hive.request_apply_commit(&agent, &sha, description.as_deref())?;
            Response {
                approval_id: Some(id),
                ..Response::ok()
            }
            .into()
        }
        Request::Questions => Response {
            questions: Some(hive.questions()?),
            ..Response::ok()
        }
        .into(),
        Request::Answer { id, answer } => {
            hive.answer(id, &answer)?;
            Response::ok().into()
        }
        Request::CancelQuestion { id } => {
            hive.cancel_question(id)?;
            Response::ok().into()
        }
        _ => unreachable!("routed by dispatch"),
    })
}
