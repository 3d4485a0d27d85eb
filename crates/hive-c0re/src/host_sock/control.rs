//! Steering verbs: cancel, compact, model override, schedules; the hive's URLs and telemetry.

use std::sync::Arc;

use hive_sh4re::host::{Request, Response, Urls};

use super::Reply;
use crate::error::Result;
use crate::hive::Hive;

pub(super) async fn handle(hive: &Arc<Hive>, req: Request) -> Result<Reply> {
    Ok(match req {
        Request::Urls => Response {
            urls: Some(Urls {
                home: hive.settings.dashboard_home.clone(),
                ..Urls::default()
            }),
            ..Response::ok()
        }
        .into(),
        Request::Cancel { name } => {
            hive.cancel(&name)?;
            Response::ok().into()
        }
        Request::Compact { name } => {
            hive.compact(&name)?;
            Response::ok().into()
        }
        Request::CompactNotes { name } => {
            hive.compact_notes(&name)?;
            Response::ok().into()
        }
        Request::SetModel { name, model } => {
            let info = match model.as_deref() {
                Some(m) => hive.set_model(&name, Some(m))?,
                None => hive.model_info(&name)?,
            };
            Response {
                model: Some(info),
                ..Response::ok()
            }
            .into()
        }
        Request::Stats {
            agent,
            since_seconds,
        } => {
            let window_ms = since_seconds.unwrap_or(3600).clamp(1, 366 * 24 * 3600) as i64 * 1000;
            Response {
                stats: Some(hive.stats_summary(agent.as_ref(), window_ms)?),
                ..Response::ok()
            }
            .into()
        }
        Request::ScheduleAdd { agent, when, text } => {
            let id = hive.schedule_add(&agent, &when, &text, "operator")?;
            Response {
                schedule_id: Some(id),
                ..Response::ok()
            }
            .into()
        }
        Request::ScheduleList => Response {
            schedules: Some(hive.schedule_list()?),
            ..Response::ok()
        }
        .into(),
        Request::ScheduleRm { id } => {
            hive.schedule_rm(id)?;
            Response::ok().into()
        }
        _ => unreachable!("routed by dispatch"),
    })
}
