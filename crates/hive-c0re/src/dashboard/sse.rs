//! Live data: `GET /api/stream[?agent=NAME]`, server-sent events.
//!
//! One hub task follows the broker and turns each change into a frame once —
//! the fresh status row, the new event rows, the new inbox — serialized once
//! and broadcast as shared bytes (the alarms' frames go from a task of their
//! own, never behind the hub's reads of the store). A viewer only filters and forwards, so fifty
//! open pages cost the same queries as one. The hub fetches only what someone
//! watches (an agent's events only while its page is open).
//!
//! Frames (`event:` name, JSON `data:`): `hello` {agent}, `agent` AgentStatusRow,
//! `model` {agent, model: ModelInfo}, `agent_removed` {name}, `events` {agent,
//! events}, `inbox` {agent, messages}, `operator_inbox` {messages},
//! `approvals` {approvals}, `questions` {questions}, `space` {alarm: SpaceAlarm
//! or null} (the free-space alarm went on or cleared), `database` {alarm:
//! DatabaseAlarm or null} (this node lost or regained its database), `notifications`
//! {notifications, unread} (every page), `webhooks` {webhooks} (hive page),
//! `needs_you` {items} (what waits on the operator, sent when it changed),
//! `feed` {items} (new items of the hive-wide feed), `resync` {} (changes
//! were missed: refetch). A comment line every 15 s keeps proxies from closing it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use hive_sh4re::dashboard::{
    AgentRemoved, Approvals, Database, EventsFrame, FeedFrame, Frame, Hello, Inbox, ModelChanged,
    OperatorInbox, Questions, Resync, Space, StreamQuery, Webhooks,
};
use hive_sh4re::host::NeedsYou;
use hive_sh4re::{AgentName, Mailbox};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::Ctx;
use super::errors::ApiResult;
use super::extract::{Q, parse_name, require_agent};
use crate::broker::Change;
use crate::hive::Hive;
use crate::hive::feed::FeedCursor;

/// Interval of keep-alive comments.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Most events one `events` frame carries; more go in further frames.
const EVENTS_PER_FRAME: u32 = 500;
/// Messages an `inbox` frame carries.
pub const INBOX_LEN: u32 = 20;
/// Messages an `operator_inbox` frame carries.
pub const OPERATOR_INBOX_LEN: u32 = 50;
/// Notifications a `notifications` frame carries.
pub const NOTIFICATIONS_LEN: u32 = 30;
/// How soon the feed is read again when rows were pending.
const FEED_AGAIN: Duration = Duration::from_millis(100);
/// Most items of each table one `feed` frame carries.
const FEED_PER_FRAME: u32 = 200;
/// Changes the hub takes in one go (duplicates in a burst are done once).
const BATCH: usize = 512;

/// Who a frame is for.
#[derive(Debug, Clone, PartialEq)]
enum Audience {
    /// The hive page.
    Hive,
    /// The page of this agent.
    Agent(String),
    /// The hive page and this agent's page.
    Both(String),
    /// Every viewer.
    All,
}

/// One SSE frame, serialized once for every viewer.
#[derive(Debug)]
pub(crate) struct Prepared {
    audience: Audience,
    bytes: Bytes,
}

/// A frame's bytes on the stream.
fn sse_bytes(frame: &Frame) -> serde_json::Result<String> {
    // serde_json escapes newlines, so the JSON is one `data:` line.
    Ok(format!(
        "event: {}\ndata: {}\n\n",
        frame.event(),
        frame.data()?
    ))
}

impl Prepared {
    fn new(audience: Audience, frame: Frame) -> Option<Arc<Self>> {
        match sse_bytes(&frame) {
            Ok(s) => Some(Arc::new(Self {
                audience,
                bytes: Bytes::from(s),
            })),
            Err(e) => {
                let event = frame.event();
                tracing::warn!("could not serialize a dashboard {event} frame: {e}");
                None
            }
        }
    }

    fn resync() -> Arc<Self> {
        let bytes = sse_bytes(&Frame::Resync(Resync {})).expect("resync always serializes");
        Arc::new(Self {
            audience: Audience::All,
            bytes: Bytes::from(bytes),
        })
    }

    /// True when a viewer of `agent`'s page (None: the hive page) wants it.
    fn wanted_by(&self, agent: Option<&str>) -> bool {
        match (&self.audience, agent) {
            (Audience::All, _) => true,
            (Audience::Hive, None) | (Audience::Both(_), None) => true,
            (Audience::Agent(a), Some(v)) | (Audience::Both(a), Some(v)) => a == v,
            _ => false,
        }
    }
}

/// The fan-out of frames, and who is watching what.
pub(crate) struct Hub {
    tx: broadcast::Sender<Arc<Prepared>>,
    /// Open streams by page: None is the hive page, Some(name) an agent's.
    watchers: Mutex<HashMap<Option<String>, usize>>,
}

/// Keeps a viewer counted while its stream is open.
struct Watch {
    hub: Arc<Hub>,
    key: Option<String>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut w = self.hub.watchers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = w.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                w.remove(&self.key);
            }
        }
    }
}

impl Hub {
    /// A hub with no viewers; [`run`] feeds it.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            tx: broadcast::channel(1024).0,
            watchers: Mutex::default(),
        })
    }

    fn watch(self: &Arc<Self>, key: Option<String>) -> Watch {
        *self
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default() += 1;
        Watch {
            hub: self.clone(),
            key,
        }
    }

    fn watched(&self, key: Option<&str>) -> bool {
        self.watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&key.map(str::to_owned))
    }

    /// Open streams.
    #[cfg(test)]
    pub fn viewers(&self) -> usize {
        self.watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }

    fn send(&self, frame: Option<Arc<Prepared>>) {
        if let Some(f) = frame {
            // No viewer is not an error.
            let _ = self.tx.send(f);
        }
    }
}

/// What one burst of changes asks the hub to do, each thing once.
#[derive(Debug, PartialEq, Eq, Hash, Clone)]
enum Work {
    Row(String),
    Removed(String),
    Events(String, i64),
    Inbox(String),
    OperatorInbox,
    Approvals,
    Questions,
    Notifications,
    Webhooks,
    NeedsYou,
    Feed,
}

/// Follows the broker until the hive shuts down, turning changes into frames.
pub(crate) async fn run(hive: Arc<Hive>, hub: Arc<Hub>) {
    let mut changes = hive.subscribe();
    let mut cursors = Cursors::default();
    cursors.reset(&hive).await;
    // A run after a panic (see `panics.rs`) missed what changed meanwhile.
    hub.send(Some(Prepared::resync()));
    loop {
        let first = tokio::select! {
            c = changes.recv() => c,
            // A committed row the feed could not read yet (an older
            // transaction still running) comes without another change.
            _ = tokio::time::sleep(FEED_AGAIN), if cursors.feed_pending => {
                do_work(&hive, &hub, &mut cursors, Work::Feed).await;
                continue;
            }
            _ = hive.shutdown_token().cancelled() => return,
        };
        let mut batch = vec![];
        let mut lagged = false;
        match first {
            Ok(c) => batch.push(c),
            Err(RecvError::Lagged(_)) => lagged = true,
            Err(RecvError::Closed) => return,
        }
        while batch.len() < BATCH {
            match changes.try_recv() {
                Ok(c) => batch.push(c),
                Err(broadcast::error::TryRecvError::Lagged(_)) => lagged = true,
                Err(_) => break,
            }
        }
        if lagged {
            // Changes were lost: viewers refetch; cursors restart at the newest rows.
            tracing::warn!("the dashboard fell behind the hive's changes; pages resync");
            cursors.reset(&hive).await;
            hub.send(Some(Prepared::resync()));
            continue;
        }
        for work in coalesce(batch) {
            do_work(&hive, &hub, &mut cursors, work).await;
        }
    }
}

/// Sends the alarms' frames (free space, the database) as they change,
/// apart from [`run`]: they read nothing of the store, and must reach the
/// pages while `run` waits on a read of the database they are about.
pub(crate) async fn alarms(hive: Arc<Hive>, hub: Arc<Hub>) {
    let mut changes = hive.subscribe();
    loop {
        let change = tokio::select! {
            c = changes.recv() => c,
            _ = hive.shutdown_token().cancelled() => return,
        };
        let (space, database) = match change {
            Ok(Change::Space) => (true, false),
            Ok(Change::Database) => (false, true),
            // Missed some: both again.
            Err(RecvError::Lagged(_)) => (true, true),
            Err(RecvError::Closed) => return,
            Ok(_) => continue,
        };
        if space {
            let alarm = hive.space().alarm();
            hub.send(Prepared::new(Audience::All, Frame::Space(Space { alarm })));
        }
        if database {
            let alarm = hive.database_alarm();
            hub.send(Prepared::new(
                Audience::All,
                Frame::Database(Database { alarm }),
            ));
        }
    }
}

/// The work of a burst, each thing once, in the order of its last mention (so
/// "removed, then created again" ends created); events keep the highest id.
fn coalesce(batch: Vec<Change>) -> Vec<Work> {
    let mut seen = HashSet::new();
    let mut newest: HashMap<String, i64> = HashMap::new();
    let mut out = vec![];
    for work in batch.into_iter().flat_map(plan).rev() {
        let key = match &work {
            Work::Events(a, id) => {
                let e = newest.entry(a.clone()).or_insert(*id);
                *e = (*e).max(*id);
                Work::Events(a.clone(), 0)
            }
            w => w.clone(),
        };
        if seen.insert(key) {
            out.push(work);
        }
    }
    out.reverse();
    for w in &mut out {
        if let Work::Events(a, id) = w {
            *id = newest.get(a).copied().unwrap_or(*id);
        }
    }
    out
}

fn plan(c: Change) -> Vec<Work> {
    match c {
        Change::Agent(n) => vec![Work::Row(n), Work::NeedsYou],
        Change::AgentRemoved(n) => vec![Work::Removed(n), Work::NeedsYou],
        Change::Events { agent, last_id } => vec![Work::Events(agent, last_id), Work::Feed],
        Change::Message { to, from } => [to, from]
            .into_iter()
            .map(|m| {
                if m == "operator" {
                    Work::OperatorInbox
                } else {
                    Work::Inbox(m)
                }
            })
            // An inbox's depth is in a paused agent's "needs you" item.
            .chain([Work::Feed, Work::NeedsYou])
            .collect(),
        Change::Approvals => vec![Work::Approvals, Work::NeedsYou, Work::Feed],
        Change::Questions => vec![Work::Questions, Work::NeedsYou],
        // Sent by `alarms`, never behind a read of the store.
        Change::Space | Change::Database => vec![],
        Change::Notifications => vec![Work::Notifications],
        Change::Webhooks => vec![Work::Webhooks],
    }
}

/// Where the stream stands in what it follows.
#[derive(Default)]
struct Cursors {
    /// The newest event id each agent's viewers have been sent (or would have been).
    events: HashMap<String, i64>,
    /// Where the hive-wide feed is.
    feed: Option<FeedCursor>,
    /// The feed has more to read in a moment (`store::Tail::pending`).
    feed_pending: bool,
    /// The last "needs you" list sent.
    needs_you: Option<NeedsYou>,
    /// A read failed, so a change reached no page: they resync once reads work again.
    missed: bool,
}

impl Cursors {
    /// `read`'s value; on an error, noted so that pages resync (and so
    /// lose no change) once a read works again, which this also does.
    fn read<T>(&mut self, hub: &Hub, read: crate::error::Result<T>, what: &str) -> Option<T> {
        match read {
            Ok(v) => {
                if std::mem::take(&mut self.missed) {
                    hub.send(Some(Prepared::resync()));
                }
                Some(v)
            }
            Err(e) => {
                if !self.missed {
                    tracing::warn!(
                        "the dashboard could not read {what}: {e}; pages resync once it can"
                    );
                }
                self.missed = true;
                None
            }
        }
    }

    async fn reset(&mut self, hive: &Hive) {
        self.events.clear();
        self.feed = hive.feed_cursor().await.ok();
        self.needs_you = None;
        self.feed_pending = false;
        for name in hive.list().await.unwrap_or_default() {
            self.init(hive, &name).await;
        }
    }

    /// Starts an agent's cursor at its newest stored event.
    async fn init(&mut self, hive: &Hive, name: &str) {
        let newest = match AgentName::parse(name) {
            Ok(n) => hive.events(&n, None, None, 1).await.ok(),
            Err(_) => None,
        }
        .and_then(|e| e.last().map(|e| e.id))
        .unwrap_or(0);
        self.events.insert(name.to_owned(), newest);
    }
}

async fn do_work(hive: &Hive, hub: &Hub, cursors: &mut Cursors, work: Work) {
    match work {
        Work::Row(n) => {
            if !cursors.events.contains_key(&n) {
                // A new agent: its viewers start at whatever history it has.
                cursors.init(hive, &n).await;
            }
            let agent_watched = hub.watched(Some(&n));
            if !hub.watched(None) && !agent_watched {
                return;
            }
            let Ok(name) = AgentName::parse(&n) else {
                return;
            };
            if let Some(row) = cursors.read(hub, hive.status_row(&name).await, "an agent's row") {
                hub.send(Prepared::new(Audience::Both(n.clone()), Frame::Agent(row)));
            }
            if agent_watched
                && let Some(model) = cursors.read(hub, hive.model_info(&name).await, "a model")
            {
                let model = ModelChanged {
                    agent: n.clone(),
                    model,
                };
                hub.send(Prepared::new(
                    Audience::Agent(n.clone()),
                    Frame::Model(model),
                ));
            }
        }
        Work::Removed(n) => {
            cursors.events.remove(&n);
            hub.send(Prepared::new(
                Audience::Both(n.clone()),
                Frame::AgentRemoved(AgentRemoved { name: n }),
            ));
        }
        Work::Events(n, last_id) => {
            let cursor = match cursors.events.get(&n) {
                Some(&c) => c,
                // Events of an agent the hub has not seen created: its viewers
                // get the newest rows up to this batch and drop what they have.
                None => last_id.saturating_sub(i64::from(EVENTS_PER_FRAME)).max(0),
            };
            if last_id <= cursor {
                return;
            }
            if !hub.watched(Some(&n)) {
                cursors.events.insert(n, last_id);
                return;
            }
            let Ok(name) = AgentName::parse(&n) else {
                return;
            };
            let mut since = cursor;
            loop {
                let read = hive
                    .events(&name, Some(since), None, EVENTS_PER_FRAME)
                    .await;
                let Some(events) = cursors.read(hub, read, "events") else {
                    break;
                };
                let Some(last) = events.last().map(|e| e.id) else {
                    break;
                };
                since = last;
                let full = events.len() as u32 == EVENTS_PER_FRAME;
                let frame = EventsFrame {
                    agent: n.clone(),
                    events,
                };
                hub.send(Prepared::new(
                    Audience::Agent(n.clone()),
                    Frame::Events(frame),
                ));
                if !full {
                    break;
                }
            }
            cursors.events.insert(n, since.max(cursor));
        }
        Work::Inbox(n) => {
            if hub.watched(Some(&n))
                && let Ok(name) = AgentName::parse(&n)
                && let Some(messages) = cursors.read(
                    hub,
                    hive.recent_messages(&Mailbox::Agent(name), INBOX_LEN).await,
                    "an inbox",
                )
            {
                let inbox = Inbox {
                    agent: n.clone(),
                    messages,
                };
                hub.send(Prepared::new(Audience::Agent(n), Frame::Inbox(inbox)));
            }
        }
        Work::OperatorInbox => {
            if hub.watched(None)
                && let Some(messages) = cursors.read(
                    hub,
                    hive.recent_messages(&Mailbox::Operator, OPERATOR_INBOX_LEN)
                        .await,
                    "the operator's inbox",
                )
            {
                hub.send(Prepared::new(
                    Audience::Hive,
                    Frame::OperatorInbox(OperatorInbox { messages }),
                ));
            }
        }
        Work::Approvals => {
            if hub.watched(None)
                && let Some(approvals) = cursors.read(hub, hive.approvals().await, "approvals")
            {
                hub.send(Prepared::new(
                    Audience::Hive,
                    Frame::Approvals(Approvals { approvals }),
                ));
            }
        }
        Work::Notifications => {
            let read = hive.notifications(false, Some(NOTIFICATIONS_LEN)).await;
            if let Some(list) = cursors.read(hub, read, "notifications") {
                hub.send(Prepared::new(Audience::All, Frame::Notifications(list)));
            }
        }
        Work::Webhooks => {
            if hub.watched(None)
                && let Some(webhooks) = cursors.read(hub, hive.webhook_statuses().await, "webhooks")
            {
                hub.send(Prepared::new(
                    Audience::Hive,
                    Frame::Webhooks(Webhooks { webhooks }),
                ));
            }
        }
        Work::NeedsYou => {
            if hub.watched(None)
                && let Some(needs) = cursors.read(hub, hive.needs_you().await, "what needs you")
                && cursors.needs_you.as_ref() != Some(&needs)
            {
                cursors.needs_you = Some(needs.clone());
                hub.send(Prepared::new(Audience::Hive, Frame::NeedsYou(needs)));
            } else if !hub.watched(None) {
                // Nobody saw the last one: the next viewer's page fetches it.
                cursors.needs_you = None;
            }
        }
        Work::Feed => {
            let Some(cursor) = cursors.feed else {
                cursors.feed = hive.feed_cursor().await.ok();
                return;
            };
            if !hub.watched(None) {
                cursors.feed = hive.feed_cursor().await.ok().or(Some(cursor));
                cursors.feed_pending = false;
                return;
            }
            let read = hive.feed_after(cursor, FEED_PER_FRAME).await;
            match cursors.read(hub, read, "the feed") {
                Some((items, next, pending)) => {
                    cursors.feed = Some(next);
                    cursors.feed_pending = pending;
                    if !items.is_empty() {
                        hub.send(Prepared::new(
                            Audience::Hive,
                            Frame::Feed(FeedFrame { items }),
                        ));
                    }
                }
                None => cursors.feed_pending = false,
            }
        }
        Work::Questions => {
            if hub.watched(None)
                && let Some(questions) = cursors.read(hub, hive.questions().await, "questions")
            {
                hub.send(Prepared::new(
                    Audience::Hive,
                    Frame::Questions(Questions { questions }),
                ));
            }
        }
    }
}

/// `GET /api/stream[?agent=NAME]`: the hive page's or one agent page's live frames.
pub(crate) async fn stream(State(ctx): State<Ctx>, Q(q): Q<StreamQuery>) -> ApiResult<Response> {
    let agent = match q.agent.as_deref() {
        Some(raw) => {
            let name = parse_name(raw)?;
            require_agent(&ctx, &name).await?;
            Some(name.to_string())
        }
        None => None,
    };
    // Subscribe before saying hello: the page fetches history after hello, so
    // nothing stored in between is missed (the page drops duplicates by id).
    let rx = ctx.hub.tx.subscribe();
    let watch = ctx.hub.watch(agent.clone());
    let hello = sse_bytes(&Frame::Hello(Hello {
        agent: agent.clone(),
    }))
    .expect("a hello always serializes");
    let hello = format!("retry: 2000\n{hello}");
    let viewer = Viewer {
        rx,
        watch,
        shutdown: ctx.hive.shutdown_token().clone(),
        logouts: ctx.auth.logins().logouts(),
        hello: Some(Bytes::from(hello)),
        keep_alive: tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE),
    };
    let body = futures::stream::unfold(viewer, |mut v| async move {
        let chunk = v.next().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), v))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// One open stream.
struct Viewer {
    rx: broadcast::Receiver<Arc<Prepared>>,
    watch: Watch,
    shutdown: tokio_util::sync::CancellationToken,
    /// The operator logging every browser out ends the stream: the page
    /// then reconnects and is told to log in again.
    logouts: tokio::sync::watch::Receiver<u64>,
    hello: Option<Bytes>,
    keep_alive: tokio::time::Interval,
}

impl Viewer {
    /// The next chunk to write, or None to end the stream.
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(h) = self.hello.take() {
            return Some(h);
        }
        let agent = self.watch.key.clone();
        loop {
            tokio::select! {
                r = self.rx.recv() => match r {
                    Ok(f) if f.wanted_by(agent.as_deref()) => return Some(f.bytes.clone()),
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => return Some(Prepared::resync().bytes.clone()),
                    Err(RecvError::Closed) => return None,
                },
                _ = self.keep_alive.tick() => return Some(Bytes::from_static(b": keep-alive\n\n")),
                _ = self.shutdown.cancelled() => return None,
                Ok(()) = self.logouts.changed() => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change whose read failed reached no page: the first read that
    /// works again sends every page a resync, once.
    #[test]
    fn a_failed_read_makes_pages_resync_once_reads_work() {
        let hub = Hub::new();
        let mut rx = hub.tx.subscribe();
        let mut cursors = Cursors::default();
        let failed: crate::error::Result<u8> = Err(crate::error::Error::refused("down"));
        assert_eq!(cursors.read(&hub, failed, "x"), None);
        assert!(rx.try_recv().is_err(), "nothing to send while reads fail");
        assert_eq!(cursors.read(&hub, Ok(1), "x"), Some(1));
        let frame = rx.try_recv().expect("a resync");
        assert_eq!(frame.bytes, Prepared::resync().bytes);
        assert_eq!(cursors.read(&hub, Ok(2), "x"), Some(2));
        assert!(rx.try_recv().is_err(), "one resync");
    }

    #[test]
    fn audiences() {
        let f = |a| Prepared {
            audience: a,
            bytes: Bytes::new(),
        };
        assert!(f(Audience::Hive).wanted_by(None));
        assert!(!f(Audience::Hive).wanted_by(Some("alice")));
        assert!(f(Audience::Both("alice".into())).wanted_by(Some("alice")));
        assert!(f(Audience::Both("alice".into())).wanted_by(None));
        assert!(!f(Audience::Both("alice".into())).wanted_by(Some("bob")));
        assert!(!f(Audience::Agent("alice".into())).wanted_by(None));
        assert!(f(Audience::All).wanted_by(Some("bob")));
    }

    #[test]
    fn bursts_coalesce() {
        let batch = vec![
            Change::Agent("a".into()),
            Change::Events {
                agent: "a".into(),
                last_id: 3,
            },
            Change::AgentRemoved("a".into()),
            Change::Events {
                agent: "a".into(),
                last_id: 9,
            },
            Change::Agent("a".into()),
            Change::Approvals,
            Change::Approvals,
        ];
        assert_eq!(
            coalesce(batch),
            vec![
                Work::Removed("a".into()),
                Work::Events("a".into(), 9),
                Work::Row("a".into()),
                Work::Approvals,
                Work::NeedsYou,
                Work::Feed
            ]
        );
    }

    #[test]
    fn messages_plan_both_mailboxes() {
        let w = plan(Change::Message {
            to: "alice".into(),
            from: "operator".into(),
        });
        assert_eq!(
            w,
            vec![
                Work::Inbox("alice".into()),
                Work::OperatorInbox,
                Work::Feed,
                Work::NeedsYou
            ]
        );
    }
}
