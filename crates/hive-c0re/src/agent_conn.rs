//! One harness connection on its agent.sock: requests in, answers out.
//!
//! The connection is the agent's whose socket accepted it (`agent_sock.rs`),
//! so every request is that agent's: a harness cannot speak for another. A
//! connection that claimed messages for a turn hands them back if it goes
//! away before acknowledging.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use hive_sh4re::agent::{AgentRequest, AgentResponse, EventIn, HARNESS_EVENT_KINDS};
use hive_sh4re::config::is_model_name;
use hive_sh4re::event::EventKind;
use hive_sh4re::limits::{MAX_LINE_BYTES, RECV_DEFAULT};
use hive_sh4re::{AgentName, AgentState, Mailbox};
use tokio::io::{AsyncWriteExt, BufReader};

use crate::admission::Slot;
use crate::agent_sock::{Accepted, Incoming};
use crate::clock::{now_ms, sleep_until};
use crate::error::{Error, Result};
use crate::hive::turns::Claim;
use crate::hive::{Hive, message_wire};
use crate::lines::{Line, read_line};
use crate::store::Spend;

/// Longest a long poll (`next_turn`, `control`) waits before answering empty.
const MAX_POLL: Duration = Duration::from_secs(300);

/// The task a connection is served as, for the log and the operator's notices.
const CONNECTION: &str = "agent.sock connection";

/// Serves every connection the agents' sockets accept, until the hive shuts
/// down; a panic of the loop that hands them out starts it again (see `panics.rs`).
pub async fn serve(hive: Arc<Hive>, incoming: Incoming) {
    let incoming = Arc::new(tokio::sync::Mutex::new(incoming));
    hive.clone()
        .keep_running("agent.sock dispatch", move |hive| {
            hand_out(hive, incoming.clone())
        })
        .await
}

async fn hand_out(hive: Arc<Hive>, incoming: Arc<tokio::sync::Mutex<Incoming>>) {
    let mut incoming = incoming.lock().await;
    loop {
        let conn = tokio::select! {
            c = incoming.recv() => match c { Some(c) => c, None => return },
            _ = hive.shutdown_token().cancelled() => return,
        };
        hive.spawn_task(CONNECTION, serve_conn(hive.clone(), conn));
    }
}

/// Per-connection state: what this connection holds that must be given back.
/// Dropping it (the harness went away) gives back the turn slots it holds.
#[derive(Default)]
struct Conn {
    /// The turn this connection began and has not ended.
    turn: Option<Claim>,
    /// The turn slot of that turn.
    turn_slot: Option<Slot>,
    /// The slot `admit` gave, for claude outside a turn; what such a run
    /// spent is reported (`stats`) only while it is held.
    run_slot: Option<Slot>,
    /// When this connection first asked `admit` for the slot it waits for (unix ms):
    /// asking again after a long poll keeps its place in line.
    admit_since: Option<i64>,
    /// The clock of the slot it holds (either), while it holds one.
    slot: Option<SlotClock>,
}

impl Conn {
    fn holds_slot(&self) -> bool {
        self.turn_slot.is_some() || self.run_slot.is_some()
    }
}

/// When a connection must give its slot back.
#[derive(Debug, Clone, Copy)]
struct SlotClock {
    since: Instant,
    /// [`Hive::slot_limit`] when it was given.
    limit: Duration,
    /// [`Hive::asking_time`] when it was given.
    asked: Duration,
    /// A turn's slot, not `admit`'s.
    turn: bool,
}

impl SlotClock {
    /// The limit past `since`, and the time the agent's questions waited on
    /// the operator meanwhile, which a turn's limit does not count.
    fn deadline(&self, hive: &Hive, name: &AgentName) -> Instant {
        self.since + self.limit + hive.asking_time(name).saturating_sub(self.asked)
    }
}

/// At `deadline`: true when the slot is held past its limit; false when the
/// agent's questions waited meanwhile, which moves the deadline on.
fn still_held(
    hive: &Hive,
    name: &AgentName,
    clock: Option<SlotClock>,
    deadline: &mut Option<Instant>,
) -> bool {
    let Some(c) = clock else { return false };
    let d = c.deadline(hive, name);
    if d > Instant::now() {
        *deadline = Some(d);
        return false;
    }
    true
}

/// Serves one connection until it ends, then hands back what it held. A
/// panic while it served ends the connection alone, as a close does: the
/// agent can set one off at will, and must not take the daemon with it.
async fn serve_conn(hive: Arc<Hive>, conn: Accepted) {
    // `_place` is held until the connection ends.
    let Accepted {
        agent: name,
        stream,
        closed,
        place: _place,
    } = conn;
    let mut conn = Conn::default();
    let served = crate::panics::caught(
        CONNECTION,
        Some(&name),
        serve_requests(&hive, &name, stream, &closed, &mut conn),
    )
    .await;
    match served {
        Ok(true) => {
            if let Some(c) = conn.slot {
                hive.slot_overheld(&name, c.since.elapsed(), c.turn).await;
            }
        }
        Ok(false) => {}
        Err(panic) => hive.faults().report(
            CONNECTION,
            Some(&name),
            &panic,
            "the connection is closed, its claims handed back, and the daemon goes on",
        ),
    }
    if conn.turn.is_some() {
        hive.release_claims(&name).await;
    }
}

/// Answers the connection's requests until it ends: true when it was ended
/// for holding its slot past its limit.
async fn serve_requests(
    hive: &Arc<Hive>,
    name: &AgentName,
    stream: tokio::net::UnixStream,
    closed: &tokio_util::sync::CancellationToken,
    conn: &mut Conn,
) -> bool {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    // The harness enforces a turn's time limit, and it is the agent's: a
    // slot held past the limit (a hung harness, or one an agent drives to
    // hold the hive's turns) is taken back by ending the connection.
    let mut overheld = false;
    'serving: loop {
        let clock = conn.slot;
        let mut deadline = clock.map(|c| c.deadline(hive, name));
        let line = {
            // One read per line, kept across the deadline's checks: a line
            // read in part is not lost.
            let read = read_line(&mut r, MAX_LINE_BYTES);
            tokio::pin!(read);
            loop {
                tokio::select! {
                    l = &mut read => break l,
                    _ = closed.cancelled() => break 'serving,
                    _ = hive.shutdown_token().cancelled() => break 'serving,
                    () = sleep_until(deadline) => {
                        if still_held(hive, name, clock, &mut deadline) {
                            overheld = true;
                            break 'serving;
                        }
                    }
                }
            }
        };
        if matches!(line, Ok(Line::Data(_) | Line::TooLong)) {
            // Every line counts, whatever it asks and whether it parses, and
            // waits before any work is done for it; an agent's connections
            // are few, so few wait at once.
            tokio::select! {
                // A request within the bound goes at once, whatever else is ready.
                biased;
                () = hive.pace_request(name) => {}
                _ = closed.cancelled() => break 'serving,
                _ = hive.shutdown_token().cancelled() => break 'serving,
                _ = peer_closed(&mut r) => break 'serving,
            }
        }
        let resp = match line {
            Ok(Line::Data(bytes)) => match AgentRequest::from_line(&bytes) {
                Ok(req) => {
                    // What gives the slot back runs to its end.
                    if matches!(req, AgentRequest::TurnEnd { .. } | AgentRequest::Release) {
                        deadline = None;
                    }
                    let resp = {
                        let handled = handle(hive, name, conn, req);
                        tokio::pin!(handled);
                        // A long poll must end with its client: a dead harness's pending
                        // `control` would otherwise take the next command and drop it.
                        // Nor may it hold a slot past its limit.
                        loop {
                            tokio::select! {
                                r = &mut handled => break r.unwrap_or_else(|e| AgentResponse {
                                    // The harness waits and asks again, instead of
                                    // failing turn after turn into `failed`.
                                    unavailable: e.is_unreachable() || e.is_disk_full(),
                                    ..AgentResponse::refusal(e.to_string())
                                }),
                                _ = peer_closed(&mut r) => break 'serving,
                                () = sleep_until(deadline) => {
                                    if still_held(hive, name, clock, &mut deadline) {
                                        overheld = true;
                                        break 'serving;
                                    }
                                }
                            }
                        }
                    };
                    conn.slot = match conn.slot {
                        _ if !conn.holds_slot() => None,
                        Some(c) => Some(c),
                        None => {
                            let turn = conn.turn_slot.is_some();
                            Some(SlotClock {
                                since: Instant::now(),
                                limit: hive.slot_limit(name, turn).await,
                                asked: hive.asking_time(name),
                                turn,
                            })
                        }
                    };
                    resp
                }
                Err(e) => AgentResponse::refusal(e),
            },
            Ok(Line::TooLong) => AgentResponse::refusal(format!(
                "the request is over {MAX_LINE_BYTES} bytes and was skipped"
            )),
            Ok(Line::Eof) | Err(_) => break,
        };
        let mut out = serde_json::to_vec(&resp).unwrap_or_default();
        out.push(b'\n');
        if w.write_all(&out).await.is_err() {
            break;
        }
    }
    overheld
}

async fn handle(
    hive: &Arc<Hive>,
    name: &AgentName,
    conn: &mut Conn,
    req: AgentRequest,
) -> Result<AgentResponse> {
    let me = Mailbox::Agent(name.clone());
    #[cfg(test)]
    tests::trip(name);
    let req = redact_request(hive, name, req).await?;
    Ok(match req {
        AgentRequest::Config => AgentResponse {
            config: Some(hive.effective_config(name).await?),
            ..AgentResponse::ok()
        },
        AgentRequest::NextTurn { wait_ms } => {
            let wait = wait_ms
                .map(Duration::from_millis)
                .unwrap_or(MAX_POLL)
                .min(MAX_POLL);
            match hive.next_turn(name, wait).await? {
                // The turn's config comes with its messages: one round trip less before claude starts.
                Some(turn) => {
                    conn.turn = Some(turn.claim());
                    conn.turn_slot = Some(turn.slot);
                    AgentResponse {
                        messages: Some(turn.messages.iter().map(message_wire).collect()),
                        config: Some(turn.config),
                        ..AgentResponse::ok()
                    }
                }
                None => AgentResponse {
                    messages: Some(vec![]),
                    ..AgentResponse::ok()
                },
            }
        }
        AgentRequest::Admit { wait_ms } => {
            if conn.run_slot.is_none() {
                let wait = wait_ms
                    .map(Duration::from_millis)
                    .unwrap_or(MAX_POLL)
                    .min(MAX_POLL);
                let since = *conn.admit_since.get_or_insert_with(now_ms);
                conn.run_slot = hive.run_slot(name, since, wait).await;
            }
            if conn.run_slot.is_some() {
                conn.admit_since = None;
            }
            AgentResponse {
                admitted: conn.run_slot.is_some(),
                ..AgentResponse::ok()
            }
        }
        AgentRequest::Release => {
            conn.run_slot = None;
            AgentResponse::ok()
        }
        AgentRequest::NeedsLogin { needed, reason } => {
            let reason = reason.map(|r| r.chars().take(300).collect());
            if hive.take_state_report(name) {
                hive.report_needs_login(name, needed, reason).await?;
            }
            AgentResponse::ok()
        }
        AgentRequest::ApiRetry {
            status,
            error,
            attempt,
            max_retries,
        } => {
            if !hive.take_state_report(name) {
                return Ok(AgentResponse::ok());
            }
            let error: String = error.chars().take(100).collect();
            AgentResponse {
                give_up: hive
                    .api_retry(name, status, &error, attempt, max_retries)
                    .await?,
                ..AgentResponse::ok()
            }
        }
        AgentRequest::Backoff {
            retry_in_ms,
            reason,
        } => {
            // At most a day: the figure is the harness's, and only shown.
            let retry_in = Duration::from_millis(retry_in_ms.min(86_400_000));
            if hive.take_state_report(name) {
                hive.api_backoff(name, retry_in, &reason).await?;
            }
            AgentResponse::ok()
        }
        AgentRequest::State { state, model } => {
            if state == hive_sh4re::AgentState::Queued {
                return Err(Error::refused(
                    "`queued` is the hive's to show (an agent waiting for a turn slot), not a state to report",
                ));
            }
            if state == AgentState::NodeDown {
                return Err(Error::refused(
                    "`node_down` is the hive's to show (an agent whose node stopped heartbeating), not a state to report",
                ));
            }
            // Only the hive holds an agent for its budget (`next_turn`), and releases it.
            if state == AgentState::OverBudget {
                return Err(Error::refused(
                    "over_budget is a state only hive-c0re sets: report idle, thinking or compacting",
                ));
            }
            // Every agent's status tool and the operator's rows show it.
            if let Some(m) = model.as_deref().filter(|m| !is_model_name(m)) {
                let shown: String = m.chars().take(40).collect();
                return Err(Error::refused(format!(
                    "{shown:?} is not a model name (1-100 letters, digits, '-', '.', '_', ':', '[', ']')"
                )));
            }
            if hive.take_state_report(name) {
                hive.set_state(name, state, model.as_deref()).await?;
            }
            AgentResponse::ok()
        }
        AgentRequest::Events { items } => {
            let items = harness_events(items)?;
            // A model call answered ends the hive's API backoff (claude's own error
            // texts come as assistant lines of the model `<synthetic>`).
            let answered = items.iter().any(|(kind, payload)| {
                *kind == EventKind::Stream
                    && serde_json::from_str::<serde_json::Value>(payload).is_ok_and(|p| {
                        p["type"] == "assistant"
                            && p["message"]["model"]
                                .as_str()
                                .is_some_and(|m| m != "<synthetic>")
                    })
            });
            if hive.space().is_low() {
                // The stream is what the hive can drop; the turn's end, its
                // acknowledgements and the agent's state are still recorded.
                tracing::debug!(agent = %name, dropped = items.len(), "the disk is nearly full: events dropped");
                if answered {
                    hive.api_answered(name);
                }
                return Ok(AgentResponse::ok());
            }
            hive.add_harness_events(name, &items).await?;
            if answered {
                hive.api_answered(name);
            }
            AgentResponse::ok()
        }
        AgentRequest::TurnEnd {
            stats,
            outcome,
            session,
        } => {
            let claim = conn.turn.take().ok_or_else(|| {
                Error::refused("no turn to end: a turn begins with next_turn on this connection")
            })?;
            // The slot goes back however the ending went.
            let _slot = conn.turn_slot.take();
            let stats = crate::hive::telemetry::bounded_turn_stats(stats);
            // Stored in the agent's row at each turn's end: an id no claude
            // gives is not kept (the next turn starts a fresh session).
            let session = session.filter(|s| {
                s.len() <= hive_sh4re::limits::SESSION_ID_MAX_BYTES
                    && !s.chars().any(hive_sh4re::text::shows_nothing)
            });
            if let Err(e) = hive
                .end_turn(name, &claim, &stats, outcome, session.as_deref())
                .await
            {
                // Nothing of the turn was stored: its messages are still its
                // own, and come back to the inbox when this connection closes.
                conn.turn = Some(claim);
                return Err(e);
            }
            AgentResponse {
                config: Some(hive.effective_config(name).await?),
                ..AgentResponse::ok()
            }
        }
        AgentRequest::Stats { items } => {
            // Spend is the word of a claude that ran, counted once: a turn's
            // comes with its `turn_end`, a run outside a turn's (a
            // compaction) while the slot `admit` gave it is held. Reported
            // by anyone at any time, one report held the whole hive.
            let spend = Spend::of(items.iter().map(|(k, v)| (k.as_str(), *v)));
            if !spend.is_zero() && conn.run_slot.is_none() {
                return Err(Error::refused(
                    "spend (cost.usd, tokens.in, tokens.out) is reported by a claude run that holds a turn slot: \
                     a turn's with its turn_end, another run's after admit gave it one: nothing was recorded",
                ));
            }
            hive.record_stats(name, &items).await?;
            AgentResponse::ok()
        }
        AgentRequest::Control { wait_ms } => {
            let wait = wait_ms
                .map(Duration::from_millis)
                .unwrap_or(MAX_POLL)
                .min(MAX_POLL);
            AgentResponse {
                control: hive.next_control(name, wait).await,
                ..AgentResponse::ok()
            }
        }
        AgentRequest::Send { to, body, key } => {
            let to = Mailbox::parse(&to)
                .map_err(|e| Error::refused(format!("cannot send to {to:?}: {e}")))?;
            let id = hive.send_keyed(&me, &to, &body, key.as_deref()).await?;
            AgentResponse {
                message_id: Some(id),
                ..AgentResponse::ok()
            }
        }
        AgentRequest::Recv { max } => {
            let msgs = hive.agent_recv(name, max.unwrap_or(RECV_DEFAULT)).await?;
            AgentResponse {
                messages: Some(msgs),
                ..AgentResponse::ok()
            }
        }
        AgentRequest::Status => AgentResponse {
            agents: Some(hive.status_rows_for_agents().await?),
            ..AgentResponse::ok()
        },
        AgentRequest::SetStatus { text } => {
            hive.set_status_text(name, &text).await?;
            AgentResponse::ok()
        }
        AgentRequest::Nap { seconds } => {
            hive.nap(name, seconds).await?;
            AgentResponse {
                text: Some(format!(
                    "napping for {seconds}s; messages wait in your inbox until then"
                )),
                ..AgentResponse::ok()
            }
        }
        AgentRequest::RequestInitConfig { .. }
        | AgentRequest::RequestSpawn { .. }
        | AgentRequest::RequestApplyCommit { .. }
        | AgentRequest::Schedule { .. }
        | AgentRequest::AskOperator { .. } => {
            if !name.is_manager() {
                return Err(Error::refused(
                    "only the manager may request new agents, config changes or operator answers",
                ));
            }
            crate::manager::handle(hive, req).await?
        }
    })
}

/// A harness's events as they are stored, or a refusal of the whole batch:
/// the kinds hive-c0re records itself (`state`, `turn_end`, `operator`, ...)
/// are its word, not an agent's, and a payload must read as its kind's.
fn harness_events(items: Vec<EventIn>) -> Result<Vec<(EventKind, String)>> {
    items
        .into_iter()
        .map(|e| {
            let kind = EventKind::parse(&e.kind)
                .filter(|k| HARNESS_EVENT_KINDS.contains(k))
                .ok_or_else(|| {
                    let kinds: Vec<&str> = HARNESS_EVENT_KINDS.iter().map(|k| k.as_str()).collect();
                    Error::refused(format!(
                        "{:?} is not an event kind a harness reports (those are {}): nothing was recorded",
                        e.kind,
                        kinds.join(", ")
                    ))
                })?;
            kind.check(&e.payload).map_err(|why| {
                Error::refused(format!(
                    "the payload of a {kind} event does not read as one ({why}): nothing was recorded"
                ))
            })?;
            Ok((kind, e.payload.to_string()))
        })
        .collect()
}

/// What an agent says is stored and shown to others (messages, its status,
/// the manager's requests): a value of a secret it is given becomes
/// `[secret NAME]` (only those: `Hive::redactor_for`). Events, which only
/// the operator reads, are redacted with every value where every event is
/// stored (`Hive::add_events`).
async fn redact_request(hive: &Hive, name: &AgentName, req: AgentRequest) -> Result<AgentRequest> {
    if matches!(req, AgentRequest::Events { .. }) {
        return Ok(req);
    }
    let redactor = hive.redactor_for(name).await?;
    if redactor.is_empty() {
        return Ok(req);
    }
    let v = serde_json::to_value(&req)
        .map_err(|e| Error::refused(format!("bad agent.sock request: {e}")))?;
    let redacted = redactor.redact_value(v.clone());
    if redacted == v {
        return Ok(req);
    }
    serde_json::from_value(redacted).map_err(|e| {
        Error::refused(format!(
            "the request holds a secret's value and makes no sense without it ({e}): nothing was done"
        ))
    })
}

/// Resolves when the peer closed its end; pipelined bytes are left in the buffer.
async fn peer_closed<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) {
    use tokio::io::AsyncBufReadExt;
    match r.fill_buf().await {
        Ok([]) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hive_sh4re::config::AgentConfig;
    use hive_sh4re::notification::{Notification, NotificationKind};
    use std::sync::Mutex;
    use tokio::io::AsyncBufReadExt;
    use tokio::net::UnixStream;
    use tokio::sync::{Semaphore, mpsc};
    use tokio_util::sync::CancellationToken;

    /// Agents whose requests panic in `handle`: how these tests make a
    /// connection's task panic (no request of an agent can ask for it).
    static TRIPPED: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// Panics when `name`'s requests are to.
    pub(super) fn trip(name: &AgentName) {
        let tripped = TRIPPED.lock().unwrap_or_else(|p| p.into_inner());
        if tripped.iter().any(|n| n == name.as_str()) {
            drop(tripped);
            panic!("a test made a request of {name} panic");
        }
    }

    fn set_tripped(name: &AgentName, on: bool) {
        let mut tripped = TRIPPED.lock().unwrap_or_else(|p| p.into_inner());
        tripped.retain(|n| n != name.as_str());
        if on {
            tripped.push(name.to_string());
        }
    }

    /// A connection to `name`'s socket, handed to `serve` as its listener would.
    async fn connect(
        incoming: &mpsc::Sender<Accepted>,
        name: &AgentName,
        places: &Arc<Semaphore>,
    ) -> BufReader<UnixStream> {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let conn = Accepted {
            agent: name.clone(),
            stream: theirs,
            closed: CancellationToken::new(),
            place: places.clone().try_acquire_owned().unwrap(),
        };
        incoming.send(conn).await.unwrap();
        BufReader::new(ours)
    }

    /// Sends one request line: its answer, or None when the connection closed instead.
    async fn ask(conn: &mut BufReader<UnixStream>, line: &str) -> Option<AgentResponse> {
        conn.get_mut()
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        let mut answer = String::new();
        let read = tokio::time::timeout(Duration::from_secs(10), conn.read_line(&mut answer))
            .await
            .expect("an answer or a close within 10 s");
        match read {
            Ok(n) if n > 0 => Some(serde_json::from_str(&answer).unwrap()),
            _ => None,
        }
    }

    async fn internal_errors(hive: &Hive) -> Vec<Notification> {
        let all = hive.notifications(false, None).await.unwrap().notifications;
        all.into_iter()
            .filter(|n| n.kind == NotificationKind::InternalError)
            .collect()
    }

    #[tokio::test]
    async fn a_panic_ends_its_connection_alone_hands_back_its_claims_and_is_told_once() {
        let dir = tempfile::tempdir().unwrap();
        let hive = Hive::for_tests(dir.path(), None);
        hive.spawn_essential("fault notices", crate::hive::panics::tell);
        let name = AgentName::parse("crashy").unwrap();
        hive.add_stopped(&name, &AgentConfig::default().to_toml())
            .await
            .unwrap();
        hive.take_lease_for_tests(&name).await;
        let sent = hive
            .send(&Mailbox::Operator, &Mailbox::Agent(name.clone()), "hello")
            .await
            .unwrap();
        let (incoming, rx) = mpsc::channel(8);
        hive.spawn_task("agent.sock dispatch", serve(hive.clone(), rx));
        let places = Arc::new(Semaphore::new(8));

        // A turn claims the message and takes the agent's slot; then its
        // connection's next request panics, and the connection is closed.
        let mut turn = connect(&incoming, &name, &places).await;
        let claimed = ask(&mut turn, r#"{"op":"next_turn","wait_ms":0}"#)
            .await
            .expect("an answer");
        let ids: Vec<i64> = claimed.messages.unwrap().iter().map(|m| m.id).collect();
        assert_eq!(ids, [sent]);
        set_tripped(&name, true);
        assert!(
            ask(&mut turn, r#"{"op":"config"}"#).await.is_none(),
            "the connection that panicked was closed"
        );
        // The agent can do it again at will.
        for _ in 0..3 {
            let mut c = connect(&incoming, &name, &places).await;
            assert!(ask(&mut c, r#"{"op":"config"}"#).await.is_none());
        }
        set_tripped(&name, false);

        // The daemon serves on, and the connection that panicked gave back
        // what it held as a close does: its claim (the message is claimed
        // again) and its turn slot (an agent holds one at most).
        let mut again = connect(&incoming, &name, &places).await;
        let reclaimed = ask(&mut again, r#"{"op":"next_turn","wait_ms":5000}"#)
            .await
            .expect("a connection after the panics is served");
        let ids: Vec<i64> = reclaimed.messages.unwrap().iter().map(|m| m.id).collect();
        assert_eq!(ids, [sent]);

        // Four panics, one notice.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while internal_errors(&hive).await.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let told = internal_errors(&hive).await;
        assert_eq!(told.len(), 1, "{told:?}");
        let text = &told[0].text;
        assert!(
            text.contains("\"agent.sock connection\" (crashy's) panicked"),
            "{text}"
        );
        assert!(
            text.contains("a test made a request of crashy panic"),
            "{text}"
        );
        assert!(text.contains("the connection is closed"), "{text}");
    }
}
