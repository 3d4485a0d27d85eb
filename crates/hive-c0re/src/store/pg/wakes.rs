//! Cross-node wakes on PostgreSQL: LISTEN/NOTIFY on one channel.
//!
//! A write that should wake someone calls `pg_notify` in its own
//! transaction, so the notification goes out only if the write commits, and
//! only after it did: a node woken by it finds the row. The payload is
//! `ORIGIN KIND VALUE`: the writing store's origin (random per
//! [`PgStore`](super::PgStore), so a node skips its own wakes, which its
//! broker has already given), `m` and a mailbox, `q` and a question id, `r`
//! and a node (a steering request waits for it), `o` and a request id (its
//! outcome is stored), `s` (the secrets changed), or what the operator's
//! surfaces show again: `e`, an agent and its newest event id; `a`, an agent
//! whose row changed; `p`, the approvals; `n`, the notifications.
//!
//! Each store keeps one connection of its own that LISTENs (a pooled one
//! could be recycled, and its notifications with it). Notifications sent
//! while it is down are lost, so when it connects again it hands out
//! [`Wake::Resync`]; it pings the server every few seconds, so a link cut
//! without a word is found out, and reconnects with backoff until the store
//! is dropped.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::describe;
use crate::store::{Result, Wake};

/// The channel every node listens on.
pub(super) const CHANNEL: &str = "hive_wake";
/// How often the listener checks that its connection still answers, and how long it waits.
const PING: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// The shortest ping interval, however short the idle limit is set.
const PING_MIN: Duration = Duration::from_millis(100);
/// How long the server keeps a listening session that sent nothing (a
/// frozen node's): many pings' worth.
const LISTENER_IDLE: Duration = Duration::from_secs(60);
/// Backoff between failed reconnects.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A fresh origin id: random, so two stores (nodes) never share one.
pub(super) fn new_origin() -> Arc<str> {
    let r = RandomState::new().hash_one((std::process::id(), Instant::now()));
    format!("{r:016x}").into()
}

/// The payload prefix of a mailbox wake from `origin`; SQL appends the mailbox.
pub(super) fn mailbox_prefix(origin: &str) -> String {
    format!("{origin} m ")
}

/// The payload prefix of a question wake from `origin`; SQL appends the id.
pub(super) fn question_prefix(origin: &str) -> String {
    format!("{origin} q ")
}

/// The payload of a question wake from `origin`.
pub(super) fn question_payload(origin: &str, id: i64) -> String {
    format!("{origin} q {id}")
}

/// The payload of a wake for node `node`: a steering request waits for it.
pub(super) fn request_payload(origin: &str, node: &str) -> String {
    format!("{origin} r {node}")
}

/// The payload of a wake for whoever waits on request `id`'s outcome.
pub(super) fn outcome_payload(origin: &str, id: i64) -> String {
    format!("{origin} o {id}")
}

/// The payload of a wake for every node: the secrets changed.
pub(super) fn secrets_payload(origin: &str) -> String {
    format!("{origin} s -")
}

/// The payload prefix of an events wake from `origin`; SQL appends `AGENT LAST_ID`.
pub(super) fn events_prefix(origin: &str) -> String {
    format!("{origin} e ")
}

/// The payload prefix of an agent-row wake from `origin`; SQL appends the agent.
pub(super) fn agent_prefix(origin: &str) -> String {
    format!("{origin} a ")
}

/// The payload of a wake for every node: approvals changed.
pub(super) fn approvals_payload(origin: &str) -> String {
    format!("{origin} p -")
}

/// The payload of a wake for every node: notifications changed.
pub(super) fn notifications_payload(origin: &str) -> String {
    format!("{origin} n -")
}

/// The wake a payload asks for; None for this store's own and for anything unknown.
fn parse(payload: &str, origin: &str) -> Option<Wake> {
    let mut parts = payload.splitn(3, ' ');
    let (from, kind, value) = (parts.next()?, parts.next()?, parts.next()?);
    if from == origin {
        return None;
    }
    match kind {
        "m" => Some(Wake::Mailbox(value.to_owned())),
        "q" => value.parse().ok().map(Wake::Question),
        "r" => Some(Wake::Request(value.to_owned())),
        "o" => value.parse().ok().map(Wake::Outcome),
        "s" => Some(Wake::Secrets),
        "e" => {
            let (agent, id) = value.rsplit_once(' ')?;
            Some(Wake::Events {
                agent: agent.to_owned(),
                last_id: id.parse().ok()?,
            })
        }
        "a" => Some(Wake::Agent(value.to_owned())),
        "p" => Some(Wake::Approvals),
        "n" => Some(Wake::Notifications),
        _ => None,
    }
}

/// The `application_name` of a store's listening session.
pub(super) fn session_name(origin: &str) -> String {
    format!("hive-c0re wakes {origin}")
}

/// The running listener; stops when dropped (with the last clone of its store).
pub(super) struct Listener(tokio::task::JoinHandle<()>);

impl Drop for Listener {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A listening session: the client (kept to ping, and so the session lives) and its messages.
struct Session {
    client: tokio_postgres::Client,
    messages: mpsc::UnboundedReceiver<Result<AsyncMessage, tokio_postgres::Error>>,
}

/// Starts listening; returns once LISTEN is in effect, so every commit after
/// this returns reaches the subscribers. A listener that panics is told to
/// `faults` and started again after a pause (see `panics.rs`): it connects
/// anew and hands out [`Wake::Resync`], as after a cut.
pub(super) async fn start(
    mut config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    origin: Arc<str>,
    wakes: broadcast::Sender<Wake>,
    faults: crate::panics::Faults,
) -> Result<Listener> {
    config.application_name(session_name(&origin));
    let mut first = Some(listen(&config, &tls).await?);
    Ok(Listener(tokio::spawn(async move {
        crate::panics::keep_running(&faults, "wake listener", None, None, || {
            run(
                config.clone(),
                tls.clone(),
                origin.clone(),
                wakes.clone(),
                first.take(),
            )
        })
        .await
    })))
}

async fn listen(config: &tokio_postgres::Config, tls: &MakeRustlsConnect) -> Result<Session> {
    let (client, mut conn) = config.connect(tls.clone()).await?;
    let (tx, messages) = mpsc::unbounded_channel();
    // The connection is driven here; it ends with an error, or when the client is dropped.
    tokio::spawn(async move {
        let mut stream = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = stream.next().await {
            let failed = m.is_err();
            if tx.send(m).is_err() || failed {
                return;
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    // A node frozen while connected (stopped, swapping) reads no
    // notification, and the server keeps every one since for it: its queue
    // fills, and then every notifying commit of the hive fails. The server
    // ends a session idle this long; this one pings every few seconds while
    // it lives. A server without these settings (PostgreSQL before 14)
    // keeps its own: nothing is lost.
    // One that stopped reading while notifications were on their way is not
    // idle: the server's write to it times out instead (tcp_user_timeout).
    let idle = listener_idle().as_millis();
    for setting in ["tcp_user_timeout", "idle_session_timeout"] {
        if let Err(e) = client
            .batch_execute(&format!("SET {setting} = {idle}"))
            .await
        {
            tracing::debug!("the server keeps its {setting}: {e}");
        }
    }
    Ok(Session { client, messages })
}

/// Hands out wakes for ever, listening again whenever the session ends;
/// without a `first` session it begins by listening (and a resync).
async fn run(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    origin: Arc<str>,
    wakes: broadcast::Sender<Wake>,
    first: Option<Session>,
) {
    let mut session = first;
    let mut backoff = BACKOFF_MIN;
    loop {
        let Some(s) = session.take() else {
            match listen(&config, &tls).await {
                Ok(s) => {
                    tracing::info!("listening for wakes from other nodes again");
                    session = Some(s);
                    // Whatever was sent while nobody listened is lost: re-check it all.
                    let _ = wakes.send(Wake::Resync);
                }
                Err(e) => {
                    tracing::warn!(
                        "could not listen for wakes from other nodes (trying again in {backoff:?}): {e}"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
            continue;
        };
        let since = Instant::now();
        let why = serve(s, &origin, &wakes).await;
        tracing::warn!("the connection listening for wakes from other nodes ended: {why}");
        // A session that dies at once (a server refusing it) is retried with backoff, not in a loop.
        if since.elapsed() < BACKOFF_MAX {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        } else {
            backoff = BACKOFF_MIN;
        }
    }
}

/// How long the server keeps this node's listening session idle.
fn listener_idle() -> Duration {
    crate::clock::secs_from_env("HIVE_PG_LISTENER_IDLE_SECS", LISTENER_IDLE)
}

/// Hands out the session's wakes until it fails; returns why it ended.
async fn serve(mut s: Session, origin: &str, wakes: &broadcast::Sender<Wake>) -> String {
    // Often enough that the server never finds a live session idle.
    let mut ping = tokio::time::interval(PING.min(listener_idle() / 4).max(PING_MIN));
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        tokio::select! {
            m = s.messages.recv() => match m {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if let Some(w) = parse(n.payload(), origin) {
                        // No subscriber is not an error.
                        let _ = wakes.send(w);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return describe(&e),
                None => return "the server closed it".into(),
            },
            _ = ping.tick() => {
                match tokio::time::timeout(PING_TIMEOUT, s.client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return describe(&e),
                    Err(_) => return format!("the server did not answer within {PING_TIMEOUT:?}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse_and_a_store_skips_its_own() {
        let p = format!("{}alice", mailbox_prefix("aa"));
        assert_eq!(parse(&p, "bb"), Some(Wake::Mailbox("alice".into())));
        assert_eq!(parse(&p, "aa"), None);
        assert_eq!(
            parse(&question_payload("aa", 7), "bb"),
            Some(Wake::Question(7))
        );
        assert_eq!(
            parse(&request_payload("aa", "beta"), "bb"),
            Some(Wake::Request("beta".into()))
        );
        assert_eq!(
            parse(&outcome_payload("aa", 9), "bb"),
            Some(Wake::Outcome(9))
        );
        assert_eq!(
            parse(&format!("{}alice 42", events_prefix("aa")), "bb"),
            Some(Wake::Events {
                agent: "alice".into(),
                last_id: 42
            })
        );
        assert_eq!(
            parse(&format!("{}alice", agent_prefix("aa")), "bb"),
            Some(Wake::Agent("alice".into()))
        );
        assert_eq!(parse(&approvals_payload("aa"), "bb"), Some(Wake::Approvals));
        assert_eq!(
            parse(&notifications_payload("aa"), "bb"),
            Some(Wake::Notifications)
        );
        assert_eq!(parse("aa e alice", "bb"), None);
        assert_eq!(parse("aa x 1", "bb"), None);
        assert_eq!(parse("aa q nope", "bb"), None);
        assert_ne!(new_origin(), new_origin());
    }
}
