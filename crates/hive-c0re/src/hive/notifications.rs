//! The operator's notifications: every "the operator is needed" moment goes
//! through [`Hive::notify_operator`], which stores it (the bell, host.sock's
//! `notifications`) and queues it for each webhook that wants it, in one
//! transaction. [`deliver_webhooks`] is the task that empties those queues:
//! at least once, retried with a doubling delay, and across restarts (the
//! queue is a table).
//!
//! A notification's text may be an agent's words: it is redacted, cut to
//! [`TEXT_MAX_CHARS`] and kept free of control characters but newlines; every
//! surface shows it as text.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hive_sh4re::AgentName;
use hive_sh4re::notification::{
    Notification, NotificationKind, NotificationList, TEXT_MAX_CHARS, WebhookStatus,
};

use super::Hive;
use super::flood::{self, Verdict};
use crate::broker::Change;
use crate::clock::{day_of, now_ms, rfc3339};
use crate::error::{Error, Result};
use crate::store::{DeliveryRow, NotificationRow};
use crate::webhooks::{self, Webhook};

/// Most notifications one list returns.
pub const LIST_MAX: u32 = 500;
/// Notifications a list returns unless asked for another number.
pub const LIST_DEFAULT: u32 = 50;
/// Deliveries taken from the queue in one go.
const BATCH: u32 = 10;
/// How long deliveries taken stay this node's: long enough to send a whole
/// batch to a webhook that times out each time; past it (the node died) they
/// are due again, for this node or another serving the same webhook.
const TAKEN_FOR: Duration = Duration::from_secs(BATCH as u64 * (webhooks::TIMEOUT.as_secs() + 5));
/// Longest the delivery task sleeps without looking at the queue.
const IDLE: Duration = Duration::from_secs(60);

/// The dashboard path of what a notification is about.
fn link_for(kind: NotificationKind, agent: Option<&AgentName>) -> String {
    match (kind, agent) {
        (NotificationKind::Approval, _) => "/#approvals".to_owned(),
        (NotificationKind::Question, _) => "/#questions".to_owned(),
        (NotificationKind::Message, _) => "/#inbox".to_owned(),
        (NotificationKind::WebhookFailing, _) => "/#webhooks-panel".to_owned(),
        (_, Some(a)) => format!("/agents/{a}"),
        (_, None) => "/".to_owned(),
    }
}

/// `text` without its control characters but newlines, nor any other that
/// [shows nothing](hive_sh4re::text::shows_nothing): a bidi override or a
/// zero-width character makes it read otherwise than it is, on the bell
/// and on a phone, and one inside a secret hides it from redaction.
fn uncontrolled(text: &str) -> String {
    text.chars()
        .filter(|c| *c == '\n' || !(c.is_control() || hive_sh4re::text::shows_nothing(*c)))
        .collect()
}

/// Text as a notification keeps it: no control character but newlines, at most [`TEXT_MAX_CHARS`].
fn clean(text: &str) -> String {
    hive_sh4re::text::clip(&uncontrolled(text), TEXT_MAX_CHARS).into_owned()
}

/// A stored notification as the wire shows it (None for a kind this version does not know).
pub fn notification_wire(n: &NotificationRow) -> Option<Notification> {
    Some(Notification {
        id: n.id,
        ts: rfc3339(n.ts),
        kind: NotificationKind::parse(&n.kind)?,
        agent: n.agent.clone(),
        text: n.text.clone(),
        link: n.link.clone(),
        read: n.read,
    })
}

impl Hive {
    /// Tells the operator: stores a notification of `kind` about `agent` (its
    /// dashboard link follows from both) and queues it for every webhook that
    /// wants the kind. `text` may be an agent's words; it is redacted and cut.
    /// Returns the notification's id, or None when it was held back: an agent
    /// that sends or asks more than [`flood::BURST`] a window has the rest
    /// told as one summary when the window ends.
    pub async fn notify_operator(
        &self,
        kind: NotificationKind,
        agent: Option<&AgentName>,
        text: &str,
    ) -> Result<Option<i64>> {
        if let Some(a) = agent.filter(|_| kind.at_will()) {
            match self.flood.admit(a.as_str(), kind, Instant::now()) {
                Verdict::Tell => {}
                Verdict::Hold => return Ok(None),
                Verdict::SummaryThenTell(n) => {
                    let s = flood::summary(a.as_str(), kind, n, self.flood.window());
                    self.store_notification(kind, Some(a), &s, None).await?;
                }
            }
        }
        self.store_notification(kind, agent, text, None)
            .await
            .map(Some)
    }

    /// Stores a notification and queues it for the webhooks that want it
    /// (but `not_to`); its id.
    async fn store_notification(
        &self,
        kind: NotificationKind,
        agent: Option<&AgentName>,
        text: &str,
        not_to: Option<&str>,
    ) -> Result<i64> {
        // Cleaned before it is redacted too: a value with a control character
        // or a zero-width one inside matched no secret, and came out whole
        // to the eye.
        let text = clean(&self.redactor().await?.redact(&uncontrolled(text)));
        let link = link_for(kind, agent);
        let mut hooks = self.settings.webhooks.wanting(kind);
        hooks.retain(|h| Some(*h) != not_to);
        let row = self
            .store
            .add_notification(
                kind.as_str(),
                agent.map(AgentName::as_str),
                &text,
                &link,
                &hooks,
            )
            .await?;
        self.broker.publish(Change::Notifications);
        if !hooks.is_empty() {
            self.webhook_wake.send_modify(|v| *v += 1);
            self.broker.publish(Change::Webhooks);
        }
        Ok(row.id)
    }

    /// [`Hive::notify_operator`] where a failure must not stop the caller: it is logged.
    pub(crate) async fn tell_operator(
        &self,
        kind: NotificationKind,
        agent: Option<&AgentName>,
        text: &str,
    ) {
        if let Err(e) = self.notify_operator(kind, agent, text).await {
            tracing::warn!("could not store a {kind} notification: {e}");
        }
    }

    /// The newest notifications (only unread ones if `unread`), and how many are unread.
    pub async fn notifications(
        &self,
        unread: bool,
        limit: Option<u32>,
    ) -> Result<NotificationList> {
        let limit = limit.unwrap_or(LIST_DEFAULT).clamp(1, LIST_MAX);
        Ok(NotificationList {
            notifications: self
                .store
                .notifications(unread, limit)
                .await?
                .iter()
                .filter_map(notification_wire)
                .collect(),
            unread: self.store.unread_notifications().await?,
        })
    }

    /// Marks notification `id` read (None: every one); returns how many stay unread.
    pub async fn mark_notifications_read(&self, id: Option<i64>) -> Result<u64> {
        if let Some(id) = id
            && self.store.notification(id).await?.is_none()
        {
            return Err(Error::refused(format!(
                "there is no notification #{id}: see hive-c0re notifications"
            )));
        }
        if self.store.mark_notifications_read(id).await? > 0 {
            self.broker.publish(Change::Notifications);
        }
        Ok(self.store.unread_notifications().await?)
    }

    /// Each configured webhook's queue and last results (never its secret).
    pub async fn webhook_statuses(&self) -> Result<Vec<WebhookStatus>> {
        let mut statuses = Vec::with_capacity(self.settings.webhooks.hooks.len());
        for h in &self.settings.webhooks.hooks {
            let s = self.store.webhook_stats(&h.name).await?;
            statuses.push(WebhookStatus {
                name: h.name.clone(),
                format: h.format,
                target: h.target(),
                pending: s.pending,
                attempts: s.attempts,
                last_error: s.last_error,
                last_ok: s.last_ok.map(rfc3339),
            });
        }
        Ok(statuses)
    }

    /// Makes one delivery: sent and dropped from the queue, or put back for later.
    async fn deliver(&self, hook: &Webhook, d: &DeliveryRow) {
        // An agent's words (a message, a question) may be given up; the hive's own notices never.
        let mut at_will = false;
        let outcome = match self.store.notification(d.notification).await {
            Ok(Some(row)) => match notification_wire(&row) {
                Some(mut n) => {
                    at_will = n.kind.at_will();
                    n.link = self.settings.webhooks.link(&n.link);
                    match self.webhook_secret(hook).await {
                        Ok(secret) => {
                            webhooks::send(&webhooks::request(hook, &n, secret.as_deref())).await
                        }
                        Err(e) => Err(e),
                    }
                }
                None => Ok(()),
            },
            // Vacuumed (it never is while queued) or gone: nothing left to send.
            Ok(None) => Ok(()),
            Err(e) => Err(format!("could not read the notification: {e}")),
        };
        let stored = match outcome {
            Ok(()) => self.store.delivery_done(&hook.name, d.notification).await,
            Err(e) => {
                let attempts = d.attempts + 1;
                let next = now_ms() + webhooks::backoff(attempts).as_millis() as i64;
                tracing::warn!(
                    webhook = %hook.name,
                    notification = d.notification,
                    attempts,
                    "webhook delivery failed: {e}"
                );
                match self
                    .store
                    .delivery_failed(&hook.name, d.notification, next, &e)
                    .await
                {
                    Ok(last_ok)
                        if at_will
                            && attempts >= webhooks::DROP_AFTER
                            && delivers_others(last_ok) =>
                    {
                        let why = format!(
                            "{e} (notification {} refused {attempts} times while others went through: given up)",
                            d.notification
                        );
                        tracing::warn!(webhook = %hook.name, notification = d.notification, "{why}");
                        self.store
                            .delivery_dropped(&hook.name, d.notification, &why)
                            .await
                    }
                    Ok(last_ok) if attempts >= webhooks::FAILING_AFTER => {
                        self.webhook_failing(hook, attempts, last_ok, &e).await;
                        Ok(())
                    }
                    r => r.map(drop),
                }
            }
        };
        if let Err(e) = stored {
            tracing::warn!(webhook = %hook.name, "could not record a webhook delivery: {e}");
        }
        self.broker.publish(Change::Webhooks);
    }

    /// Tells the operator (the bell and the other webhooks) that `hook`
    /// keeps failing: after [`webhooks::FAILING_AFTER`] attempts at one
    /// delivery, when it has delivered nothing for [`webhooks::FAILING_FOR`]
    /// either (`last_ok`). Once for each spell of failures, whichever node
    /// delivers, and again each day it lasts.
    async fn webhook_failing(
        &self,
        hook: &Webhook,
        attempts: u32,
        last_ok: Option<i64>,
        error: &str,
    ) {
        if delivers_others(last_ok) {
            return;
        }
        let now = now_ms();
        let scope = format!("#webhook {}", hook.name);
        let key = format!("failing since {}", last_ok.unwrap_or(0));
        match self.store.claim_notice(&scope, &key, day_of(now)).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(webhook = %hook.name, "could not tell that it is failing: {e}");
                return;
            }
        }
        let last = last_ok.map_or(
            "it has not delivered since hive-c0re first used it".to_owned(),
            |t| format!("it last delivered at {}", rfc3339(t)),
        );
        let text = format!(
            "Webhook {} failed {attempts} times in a row ({last}): {error}. What it should carry waits and goes out once it answers again: see hive-c0re webhooks.",
            hook.name
        );
        let kind = NotificationKind::WebhookFailing;
        if let Err(e) = self
            .store_notification(kind, None, &text, Some(&hook.name))
            .await
        {
            tracing::warn!("could not store a {kind} notification: {e}");
        }
    }

    /// The value of the secret a webhook names, if it names one; the value
    /// last read or set when the store cannot be read.
    async fn webhook_secret(&self, hook: &Webhook) -> std::result::Result<Option<String>, String> {
        let Some(name) = &hook.secret else {
            return Ok(None);
        };
        match self.hive_secret(name).await {
            Ok(Some(v)) => {
                self.remember_webhook_secret(name.as_str(), Some(&v));
                Ok(Some(v))
            }
            Ok(None) => {
                // Removed, perhaps on another node: not kept for an alert either.
                self.remember_webhook_secret(name.as_str(), None);
                Err(format!(
                    "the secret {name} is not set: hive-c0re secret set {name}"
                ))
            }
            Err(e) => self
                .kept_webhook_secret(hook)
                .ok_or_else(|| format!("could not read the secret {name}: {e}")),
        }
    }

    /// The secret `hook` needs without reading the store: `Some(None)` when
    /// it names none, the value kept when it does; None when none is kept.
    fn kept_webhook_secret(&self, hook: &Webhook) -> Option<Option<String>> {
        let Some(name) = &hook.secret else {
            return Some(None);
        };
        self.webhook_secrets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name.as_str())
            .map(|v| Some(v.clone()))
    }

    /// Keeps (or, with None, drops) the value of hive-wide secret `name` if a webhook names it.
    pub(super) fn remember_webhook_secret(&self, name: &str, value: Option<&str>) {
        let named = self
            .settings
            .webhooks
            .hooks
            .iter()
            .any(|h| h.secret.as_ref().is_some_and(|s| s.as_str() == name));
        if !named {
            return;
        }
        let mut kept = self
            .webhook_secrets
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match value {
            Some(v) => kept.insert(name.to_owned(), v.to_owned()),
            None => kept.remove(name),
        };
    }

    /// Sends `text` straight to every webhook that wants `kind`, around the
    /// store: what the operator hears while the database (where the
    /// notifications and their queue live) is out of reach. Nothing is
    /// stored, so its id is one of its own below 0 ([`alert_id`]). Each webhook is tried up to [`DIRECT_TRIES`]
    /// times, backing off as a queued delivery does, while `still` holds and
    /// the daemon runs.
    pub(crate) async fn alert_webhooks(
        &self,
        kind: NotificationKind,
        text: &str,
        still: impl Fn() -> bool,
    ) {
        let n = Notification {
            id: alert_id(),
            ts: rfc3339(now_ms()),
            kind,
            agent: None,
            text: clean(text),
            link: self.settings.webhooks.link(&link_for(kind, None)),
            read: false,
        };
        let hooks = self
            .settings
            .webhooks
            .hooks
            .iter()
            .filter(|h| h.kinds.contains(&kind));
        let sends = hooks.map(|hook| {
            let n = &n;
            let still = &still;
            async move {
                // The value kept first: the store is what is failing.
                let secret = match self.kept_webhook_secret(hook) {
                    Some(kept) => Ok(kept),
                    None => self.webhook_secret(hook).await,
                };
                let secret = match secret {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(webhook = %hook.name, "could not send the {kind} alert: {e}");
                        return;
                    }
                };
                let req = webhooks::request(hook, n, secret.as_deref());
                for attempt in 1..=DIRECT_TRIES {
                    match webhooks::send(&req).await {
                        Ok(()) => return,
                        Err(e) => tracing::warn!(webhook = %hook.name, attempt, "could not send the {kind} alert: {e}"),
                    }
                    if attempt == DIRECT_TRIES {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(webhooks::backoff(attempt)) => {}
                        _ = self.shutdown_token().cancelled() => return,
                    }
                    if !still() {
                        return;
                    }
                }
            }
        });
        futures::future::join_all(sends).await;
    }
}

/// How many times [`Hive::alert_webhooks`] tries each webhook.
const DIRECT_TRIES: u32 = 4;

/// Tells the summaries of held-back notifications as their windows end, until the hive shuts down.
pub async fn tell_held_back(hive: Arc<Hive>) {
    loop {
        let (due, next) = hive.flood.due(Instant::now());
        for (agent, kind, n) in due {
            let Ok(name) = AgentName::parse(&agent) else {
                continue;
            };
            let text = flood::summary(&agent, kind, n, hive.flood.window());
            if let Err(e) = hive
                .store_notification(kind, Some(&name), &text, None)
                .await
            {
                tracing::warn!("could not store a summary of held-back notifications: {e}");
            }
        }
        let sleep = next.map_or(IDLE, |at| at.saturating_duration_since(Instant::now()));
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = hive.flood.holding.notified() => {}
            _ = hive.shutdown.cancelled() => return,
        }
    }
}

/// Empties the webhooks' queues until the hive shuts down: one task per
/// webhook, so a slow or dead one holds up no other. Each sends what is due,
/// in order, then sleeps until its next retry or a new notification.
pub async fn deliver_webhooks(hive: Arc<Hive>) {
    let names: Vec<&str> = hive
        .settings
        .webhooks
        .hooks
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    // Nodes sharing a store each configure their own webhooks: a queue this
    // node does not know may be another's. The vacuum drops what waits past
    // the age limit either way.
    let forgot = if hive.store.shared() {
        Ok(0)
    } else {
        hive.store.forget_webhooks_except(&names).await
    };
    match forgot {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            deliveries = n,
            "dropped the queues of webhooks no longer configured"
        ),
        Err(e) => tracing::warn!("could not drop old webhook queues: {e}"),
    }
    // Each is essential: one that panics delivers again after a pause (see `panics.rs`).
    let tasks = hive.settings.webhooks.hooks.iter().map(|hook| {
        let hook = hook.clone();
        hive.clone().keep_running("webhook delivery", move |hive| {
            deliver_to(hive, hook.clone())
        })
    });
    futures::future::join_all(tasks).await;
}

/// One webhook's delivery loop.
async fn deliver_to(hive: Arc<Hive>, hook: Webhook) {
    // Read now, so an alert sent around the store can be signed (see `alert_webhooks`).
    let _ = hive.webhook_secret(&hook).await;
    let mut wake = hive.webhook_wake.subscribe();
    loop {
        // Marked seen before the queue is read, so a notification stored meanwhile wakes the wait below.
        wake.borrow_and_update();
        let now = now_ms();
        let until = now + TAKEN_FOR.as_millis() as i64;
        let due = match hive
            .store
            .take_deliveries(&hook.name, now, until, BATCH)
            .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(webhook = %hook.name, "could not read the webhook queue: {e}");
                vec![]
            }
        };
        for d in &due {
            tokio::select! {
                _ = hive.deliver(&hook, d) => {}
                _ = hive.shutdown.cancelled() => return,
            }
        }
        if !due.is_empty() {
            continue;
        }
        let wait = match hive.store.next_delivery_at(&hook.name).await {
            Ok(Some(at)) => Duration::from_millis((at - now_ms()).max(0) as u64).min(IDLE),
            _ => IDLE,
        };
        tokio::select! {
            r = wake.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(wait) => {}
            _ = hive.shutdown.cancelled() => return,
        }
    }
}

/// The id of an alert sent around the queue: below 0 (never a stored
/// notification's), and a new one each alert (its own retries keep it). A
/// receiver that drops a repeated id, and Matrix, which takes a repeated
/// transaction id for the same message, dropped every alert after the first
/// when all had id 0.
fn alert_id() -> i64 {
    static SEQ: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 1000;
    -(now_ms().saturating_mul(1000) + seq + 1)
}

/// Whether a webhook that last delivered at `last_ok` delivers now: within
/// [`webhooks::FAILING_FOR`].
fn delivers_others(last_ok: Option<i64>) -> bool {
    last_ok.is_some_and(|t| now_ms() - t < webhooks::FAILING_FOR.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_and_cleaned() {
        let long = "x".repeat(TEXT_MAX_CHARS * 2);
        let c = clean(&long);
        assert_eq!(c.chars().count(), TEXT_MAX_CHARS);
        assert!(c.ends_with('…'));
        assert_eq!(clean("a\r\nb\x1b[31m"), "a\nb[31m");
    }

    #[tokio::test]
    async fn notifications_are_listed_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let hive = Hive::for_tests(dir.path(), None);
        let alice = AgentName::parse("alice").unwrap();
        let id = hive
            .notify_operator(NotificationKind::Crashed, Some(&alice), "boom")
            .await
            .unwrap()
            .unwrap();
        hive.notify_operator(NotificationKind::Approval, None, "spawn bob")
            .await
            .unwrap();
        let l = hive.notifications(false, None).await.unwrap();
        assert_eq!(l.unread, 2);
        assert_eq!(l.notifications[1].link, "/agents/alice");
        assert_eq!(l.notifications[0].link, "/#approvals");
        assert_eq!(hive.mark_notifications_read(Some(id)).await.unwrap(), 1);
        assert!(hive.mark_notifications_read(Some(id + 100)).await.is_err());
        assert_eq!(hive.mark_notifications_read(None).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_secret_split_by_a_control_character_is_redacted_once_it_is_whole() {
        use hive_sh4re::secret::{SecretName, SecretValue};
        let dir = tempfile::tempdir().unwrap();
        let hive = Hive::for_tests(dir.path(), None);
        let value = SecretValue::parse("sk-live-abcdefgh".into()).unwrap();
        hive.secret_set(&SecretName::parse("API_KEY").unwrap(), None, &value)
            .await
            .unwrap();
        let alice = AgentName::parse("alice").unwrap();
        hive.notify_operator(
            NotificationKind::Message,
            Some(&alice),
            "key: sk-live-\x07abcdefgh",
        )
        .await
        .unwrap();
        let l = hive.notifications(false, None).await.unwrap();
        assert_eq!(l.notifications[0].text, "key: [secret API_KEY]");
        // Nor by a character that shows nothing; and a bidi override does
        // not turn what follows around on the bell.
        hive.notify_operator(
            NotificationKind::Message,
            Some(&alice),
            "key: sk-live-\u{200B}abcdefgh, run \u{202E}fr- mr\u{202C}",
        )
        .await
        .unwrap();
        let l = hive.notifications(false, None).await.unwrap();
        assert_eq!(l.notifications[0].text, "key: [secret API_KEY], run fr- mr");
    }

    #[tokio::test]
    async fn webhook_secrets_are_kept_from_agents() {
        use hive_sh4re::secret::{SecretName, SecretValue};
        let dir = tempfile::tempdir().unwrap();
        let hive = Hive::for_tests(dir.path(), None);
        let value = SecretValue::parse("hmac-key-value-123".into()).unwrap();
        for name in ["WEBHOOK_KEY", "OTHER_KEY"] {
            hive.secret_set(&SecretName::parse(name).unwrap(), None, &value)
                .await
                .unwrap();
        }
        let alice = AgentName::parse("alice").unwrap();
        let given = hive.secrets_for(&alice).await.unwrap();
        assert!(given.0.contains_key("OTHER_KEY"));
        assert!(!given.0.contains_key("WEBHOOK_KEY"));
    }

    /// The attack: a receiver that refuses some bodies (a filter in front of
    /// it), and an agent that writes such bodies to the operator a few times
    /// a minute. Each refused one was retried every 15 minutes for the whole
    /// age limit, ahead of new notifications, while the webhook delivered
    /// the rest and never counted as failing. Refused [`webhooks::DROP_AFTER`]
    /// times while others go through, it is given up, and the status says so;
    /// a webhook that delivers nothing keeps everything.
    #[tokio::test]
    async fn a_delivery_refused_while_others_go_through_is_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let hive = Hive::for_tests(dir.path(), None);
        let hook = Webhook {
            name: "chat".into(),
            url: "http://127.0.0.1:1/".into(),
            format: hive_sh4re::notification::WebhookFormat::Json,
            kinds: NotificationKind::ALL.to_vec(),
            secret: None,
            room: None,
        };
        let add = |text: &'static str| {
            let hive = &hive;
            async move {
                hive.store
                    .add_notification("message", None, text, "/", &["chat"])
                    .await
                    .unwrap()
                    .id
            }
        };
        let (refused, fine) = (add("refused").await, add("fine").await);
        let own = hive
            .store
            .add_notification("failed", None, "alice gave up", "/", &["chat"])
            .await
            .unwrap()
            .id;
        let tried = |n, attempts| DeliveryRow {
            webhook: "chat".into(),
            notification: n,
            attempts,
        };
        // Nothing delivered yet: a webhook that is down keeps what it owes.
        hive.deliver(&hook, &tried(refused, webhooks::DROP_AFTER + 5))
            .await;
        assert_eq!(hive.store.webhook_stats("chat").await.unwrap().pending, 3);
        // It delivers the others.
        hive.store.delivery_done("chat", fine).await.unwrap();
        hive.deliver(&hook, &tried(refused, webhooks::DROP_AFTER - 2))
            .await;
        assert_eq!(hive.store.webhook_stats("chat").await.unwrap().pending, 2);
        // The hive's own notice is never given up (a receiver may refuse it
        // for a while: a rate limit an agent's flood brought about).
        hive.deliver(&hook, &tried(own, webhooks::DROP_AFTER + 5))
            .await;
        assert_eq!(hive.store.webhook_stats("chat").await.unwrap().pending, 2);
        hive.deliver(&hook, &tried(refused, webhooks::DROP_AFTER - 1))
            .await;
        let st = hive.store.webhook_stats("chat").await.unwrap();
        assert_eq!(st.pending, 1, "{st:?}");
        assert!(
            st.last_error
                .as_deref()
                .is_some_and(|e| e.contains(&format!(
                    "(notification {refused} refused {} times while others went through: given up)",
                    webhooks::DROP_AFTER
                ))),
            "{st:?}"
        );
    }

    /// A webhook failing for minutes is told once a spell, by whichever
    /// delivery (on whichever node) fails past the mark; one that delivered
    /// lately refuses only that delivery, and is not told as failing; a new
    /// spell of failures after it delivered is told again.
    #[tokio::test]
    async fn a_webhook_that_keeps_failing_is_told_once_a_spell() {
        let dir = tempfile::tempdir().unwrap();
        let hive = Hive::for_tests(dir.path(), None);
        // Nothing listens on loopback's port 1: each delivery is refused.
        let hook = Webhook {
            name: "pager".into(),
            url: "http://127.0.0.1:1/".into(),
            format: hive_sh4re::notification::WebhookFormat::Json,
            kinds: NotificationKind::ALL.to_vec(),
            secret: None,
            room: None,
        };
        let n = hive
            .store
            .add_notification("crashed", None, "boom", "/", &["pager"])
            .await
            .unwrap();
        let failing = || async {
            hive.notifications(false, Some(100))
                .await
                .unwrap()
                .notifications
                .into_iter()
                .filter(|n| n.kind == NotificationKind::WebhookFailing)
                .collect::<Vec<_>>()
        };
        let after = |attempts| DeliveryRow {
            webhook: "pager".into(),
            notification: n.id,
            attempts,
        };
        for a in 0..webhooks::FAILING_AFTER - 1 {
            hive.deliver(&hook, &after(a)).await;
        }
        assert!(failing().await.is_empty(), "told after a few minutes");
        hive.deliver(&hook, &after(webhooks::FAILING_AFTER - 1))
            .await;
        let told = failing().await;
        assert_eq!(told.len(), 1);
        assert!(
            told[0].text.starts_with(
                "Webhook pager failed 9 times in a row (it has not delivered since hive-c0re first used it): "
            ),
            "{}",
            told[0].text
        );
        assert_eq!(told[0].link, "/#webhooks-panel");
        assert_eq!(told[0].agent, None);
        // It fails on (here, or on another node): told once.
        hive.deliver(&hook, &after(webhooks::FAILING_AFTER + 3))
            .await;
        assert_eq!(failing().await.len(), 1);
        // It delivers the rest and refuses this one: not failing.
        hive.store.delivery_done("pager", n.id).await.unwrap();
        hive.deliver(&hook, &after(webhooks::FAILING_AFTER)).await;
        assert_eq!(failing().await.len(), 1);
        // Then it delivers nothing for as long: a new spell, told again.
        let last_ok = now_ms() - webhooks::FAILING_FOR.as_millis() as i64 - 1000;
        hive.webhook_failing(&hook, webhooks::FAILING_AFTER, Some(last_ok), "HTTP 502")
            .await;
        let told = failing().await;
        assert_eq!(told.len(), 2);
        assert!(
            told[0].text.contains("(it last delivered at "),
            "{}",
            told[0].text
        );
    }
}
