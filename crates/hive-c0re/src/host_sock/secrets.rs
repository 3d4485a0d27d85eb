//! Secrets: `secret_set`, `secret_list`, `secret_rm`. No answer carries a value.

use std::sync::Arc;

use hive_sh4re::host::{Response, verb};

use super::{Handle, Reply};
use crate::error::Result;
use crate::hive::Hive;

impl Handle for verb::SecretSet {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        hive.secret_set(&self.name, self.agent.as_ref(), &self.value)
            .await?;
        Ok(Response::ok().into())
    }
}

impl Handle for verb::SecretList {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        Ok(Response {
            secrets: Some(hive.secret_list().await?),
            ..Response::ok()
        }
        .into())
    }
}

impl Handle for verb::SecretRm {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        hive.secret_rm(&self.name, self.agent.as_ref()).await?;
        Ok(Response::ok().into())
    }
}
