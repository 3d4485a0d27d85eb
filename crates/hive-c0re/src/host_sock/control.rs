//! Steering verbs: cancel, compact, new session, model override, schedules; the hive's URLs and telemetry.

use std::sync::Arc;

use hive_sh4re::host::{Response, Urls, verb};

use super::{Handle, Reply};
use crate::error::{Error, Result};
use crate::hive::Hive;

impl Handle for verb::Urls {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        let login = match &hive.settings().dashboard_login {
            Some(logins) => Some(logins.link().map_err(Error::io(
                "could not make a login link (no random bytes from the kernel)",
            ))?),
            None => None,
        };
        Ok(Response {
            urls: Some(Urls {
                home: hive.settings().dashboard_home.clone(),
                login,
                ..Urls::default()
            }),
            ..Response::ok()
        }
        .into())
    }
}

impl Handle for verb::Logout {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        let Some(logins) = &hive.settings().dashboard_login else {
            return Err(Error::refused(
                "this hive-c0re serves no dashboard: there is no browser to log out",
            ));
        };
        let key = crate::login::kept::renew_login_key(hive.paths())
            .map_err(|e| Error::refused(format!("{e:#}; every browser is still logged in")))?;
        logins.replace_login_key(&key);
        tracing::info!("the operator logged every browser out of the dashboard");
        Ok(Response::ok().into())
    }
}

impl Handle for verb::Cancel {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        hive.cancel(&self.name).await?;
        Ok(Response::ok().into())
    }
}

impl Handle for verb::Compact {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        hive.compact(&self.name).await?;
        Ok(Response::ok().into())
    }
}

impl Handle for verb::CompactNotes {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        hive.compact_notes(&self.name).await?;
        Ok(Response::ok().into())
    }
}

impl Handle for verb::NewSession {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        hive.new_session(&self.name).await?;
        Ok(Response::ok().into())
    }
}

impl Handle for verb::SetModel {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        let info = match self.model.as_deref() {
            Some(m) => hive.set_model(&self.name, Some(m)).await?,
            None => hive.model_info(&self.name).await?,
        };
        Ok(Response {
            model: Some(info),
            ..Response::ok()
        }
        .into())
    }
}

impl Handle for verb::Stats {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        let window_ms = self.since_seconds.unwrap_or(3600).clamp(1, 366 * 24 * 3600) as i64 * 1000;
        Ok(Response {
            stats: Some(hive.stats_summary(self.agent.as_ref(), window_ms).await?),
            ..Response::ok()
        }
        .into())
    }
}

impl Handle for verb::ScheduleAdd {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        let id = hive
            .schedule_add(&self.agent, &self.when, &self.text, "operator")
            .await?;
        Ok(Response {
            schedule_id: Some(id),
            ..Response::ok()
        }
        .into())
    }
}

impl Handle for verb::ScheduleList {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        Ok(Response {
            schedules: Some(hive.schedule_list().await?),
            ..Response::ok()
        }
        .into())
    }
}

impl Handle for verb::ScheduleRm {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        hive.schedule_rm(self.id).await?;
        Ok(Response::ok().into())
    }
}
