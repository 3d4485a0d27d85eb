//! Budgets: `budget_set`, `budget_list`.

use std::sync::Arc;

use hive_sh4re::host::{Response, verb};

use super::{Handle, Reply};
use crate::error::Result;
use crate::hive::Hive;

impl Handle for verb::BudgetSet {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        Ok(Response {
            budgets: Some(vec![hive.budget_set(&self).await?]),
            ..Response::ok()
        }
        .into())
    }
}

impl Handle for verb::BudgetList {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        Ok(Response {
            budgets: Some(hive.budget_rows().await?),
            ..Response::ok()
        }
        .into())
    }
}
