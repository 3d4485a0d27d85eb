//! The hive's nodes: `nodes`.

use std::sync::Arc;

use hive_sh4re::host::{Response, verb};

use super::{Handle, Reply};
use crate::error::Result;
use crate::hive::Hive;

impl Handle for verb::Nodes {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        Ok(Response {
            nodes: Some(hive.node_rows().await?),
            ..Response::ok()
        }
        .into())
    }
}
