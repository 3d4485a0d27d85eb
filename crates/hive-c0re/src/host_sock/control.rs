//! Steering verbs: cancel, compact, model override; and the hive's URLs.

use std::sync::Arc;

use hive_sh4re::host::{Request, Response, Urls};

use super::Reply;
use crate::error::Result;
use crate::hive::Hive;

pub(super) async fn handle(hive: &Arc<Hive>, req: Request) -> Result<Reply> {
    Ok(match req {
        Request::Urls => Response {
            urls: Some(Urls { home: hive.settings.dashboard_home.clone(), ..Urls::default() }),
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
        Request::SetModel { name, model } => {
            let info = match model.as_deref() {
                Some("") | Some("default") => hive.set_model(&name, None)?,
                Some(m) => hive.set_model(&name, Some(m))?,
                None => hive.model_info(&name)?,
            };
            Response { model: Some(info), ..Response::ok() }.into()
        }
        _ => unreachable!("routed by dispatch"),
    })
}
