//! Approval and question verbs.

use std::sync::Arc;

use hive_sh4re::host::{Response, verb};

use super::{Handle, Reply};
use crate::error::Result;
use crate::hive::Hive;

impl Handle for verb::Pending {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        Ok(Response {
            approvals: Some(hive.approvals().await?),
            ..Response::ok()
        }
        .into())
    }
}

impl Handle for verb::ApprovalDiff {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        let diff = hive.approval_diff(self.id).await?;
        Ok(Response {
            diff_id: Some(crate::hive::approvals::diff_id(&diff)),
            diff: Some(diff),
            ..Response::ok()
        }
        .into())
    }
}

impl Handle for verb::Approve {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        hive.approve_seen(self.id, self.seen.as_deref()).await?;
        Ok(Response::ok().into())
    }
}

impl Handle for verb::Deny {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        hive.deny(self.id, self.note.as_deref()).await?;
        Ok(Response::ok().into())
    }
}

impl Handle for verb::InitConfig {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        let repo = hive.init_config(&self.name).await?;
        Ok(Response {
            repo: Some(repo),
            ..Response::ok()
        }
        .into())
    }
}

impl Handle for verb::ConfigShow {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        let (sha, text) = hive.config_show(&self.name).await?;
        Ok(Response {
            config: Some(text),
            sha: Some(sha),
            ..Response::ok()
        }
        .into())
    }
}

impl Handle for verb::ConfigCommit {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        let sha = hive
            .config_commit(&self.name, &self.text, self.message.as_deref())
            .await?;
        Ok(Response {
            sha: Some(sha),
            ..Response::ok()
        }
        .into())
    }
}

impl Handle for verb::RequestSpawn {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        let id = hive
            .request_spawn(
                &self.name,
                None,
                self.description.as_deref(),
                self.node.as_ref(),
            )
            .await?;
        Ok(Response {
            approval_id: Some(id),
            ..Response::ok()
        }
        .into())
    }
}

impl Handle for verb::RequestApplyCommit {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        let id = hive
            .request_apply_commit(&self.agent, &self.sha, self.description.as_deref(), None)
            .await?;
        Ok(Response {
            approval_id: Some(id),
            ..Response::ok()
        }
        .into())
    }
}

impl Handle for verb::Questions {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        Ok(Response {
            questions: Some(hive.questions().await?),
            ..Response::ok()
        }
        .into())
    }
}

impl Handle for verb::NeedsYou {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        Ok(Response {
            needs_you: Some(hive.needs_you().await?.items),
            ..Response::ok()
        }
        .into())
    }
}

impl Handle for verb::Answer {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        hive.answer(self.id, &self.answer).await?;
        Ok(Response::ok().into())
    }
}

impl Handle for verb::CancelQuestion {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        hive.cancel_question(self.id).await?;
        Ok(Response::ok().into())
    }
}
