//! Notifications: `notifications`, `notifications_read`, `webhooks`.

use std::sync::Arc;

use hive_sh4re::host::{Response, verb};

use super::{Handle, Reply};
use crate::error::{Error, Result};
use crate::hive::Hive;

impl Handle for verb::Notifications {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        let l = hive.notifications(self.unread, self.limit).await?;
        Ok(Response {
            notifications: Some(l.notifications),
            unread: Some(l.unread),
            ..Response::ok()
        }
        .into())
    }
}

impl Handle for verb::NotificationsRead {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        let id = match (self.id, self.all) {
            (Some(id), false) => Some(id),
            (None, true) => None,
            _ => {
                return Err(Error::refused(
                    "say which notification to mark read: an id, or all (not both)",
                ));
            }
        };
        Ok(Response {
            unread: Some(hive.mark_notifications_read(id).await?),
            ..Response::ok()
        }
        .into())
    }
}

impl Handle for verb::Webhooks {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        Ok(Response {
            webhooks: Some(hive.webhook_statuses().await?),
            ..Response::ok()
        }
        .into())
    }
}
