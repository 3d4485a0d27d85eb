//! Who may hold a dashboard connection, and for how long before asking.
//!
//! The dashboard listens on the network (other nodes reach it for their
//! shells), where anyone can connect before any login is checked. Each
//! connection is a file descriptor of the daemon, which agents, host.sock
//! and the store need too, so the listener bounds them: at most
//! [`PER_PEER`] from one address (an IPv6 /64 counts as one, since whoever
//! has one address of it has them all) and [`IN_ALL`] in all (less with few
//! descriptors). At a bound, the oldest connection that has not proved
//! itself (no request of it passed the login check or carried a node's
//! ticket) and has no request being answered is closed to make room:
//! agents share their node's address, so a flood from it must not lock out
//! that node's shells or the operator's browser, whose proved connections
//! are never closed for room. With none to close, the new connection is
//! closed at once.
//! A connection must send a request's whole head within [`HEAD_TIMEOUT`] of
//! connecting or of its last answer, or it is closed: a client that opens
//! connections and sends nothing, or a byte now and then, holds a place no
//! longer than that. A request being answered (the live stream, a shell)
//! is not timed.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::throttle::Throttle;

/// Most connections one address (or IPv6 /64) holds at once.
pub(super) const PER_PEER: usize = 64;
/// Most connections the dashboard holds at once.
pub(super) const IN_ALL: usize = 512;
/// How long a connection may take to send a request's head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a refusal is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The head timeout in force: `HIVE_DASHBOARD_HEAD_TIMEOUT_SECS` (for tests), else [`HEAD_TIMEOUT`].
fn head_timeout() -> Duration {
    crate::clock::secs_from_env("HIVE_DASHBOARD_HEAD_TIMEOUT_SECS", HEAD_TIMEOUT)
}

/// The bound in all: [`IN_ALL`], or an eighth of the open-file limit if
/// that is lower (host.sock may take half, agents and the store the rest).
pub(super) fn in_all() -> usize {
    let files = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    IN_ALL.min(
        usize::try_from(files / 8)
            .unwrap_or(usize::MAX)
            .max(PER_PEER),
    )
}

/// The address a peer's connections are counted under.
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
        },
        v4 => v4,
    }
}

/// The open connections, counted in all and per peer.
pub(super) struct Conns {
    per_peer: usize,
    in_all: usize,
    state: Mutex<State>,
    refusals: Throttle,
}

#[derive(Default)]
struct State {
    /// Every open place, oldest first.
    open: Vec<Entry>,
    by_peer: HashMap<IpAddr, usize>,
    next_id: u64,
}

struct Entry {
    id: u64,
    peer: IpAddr,
    mark: ConnMark,
}

/// Where a connection stands, and how it is told to close; each request of
/// it carries a clone (an extension) for the checks to mark it proved.
#[derive(Clone)]
pub(crate) struct ConnMark(Arc<MarkInner>);

struct MarkInner {
    /// [`IDLE`], [`BUSY`], [`PROVED`] or [`CLOSED`]: switched by
    /// compare-and-swap, so a connection is closed for room only while it
    /// is idle and unproved, never in the middle of a request.
    state: AtomicU8,
    evicted: CancellationToken,
}

/// Unproved, with no request being answered.
const IDLE: u8 = 0;
/// Unproved, a request being answered.
const BUSY: u8 = 1;
/// A request of it passed the login check or opened a node's shell.
const PROVED: u8 = 2;
/// Closed to make room.
const CLOSED: u8 = 3;

impl ConnMark {
    fn new() -> Self {
        Self(Arc::new(MarkInner {
            state: AtomicU8::new(IDLE),
            evicted: CancellationToken::new(),
        }))
    }

    /// Its request passed the login check or opened a node's shell: the
    /// connection keeps its place at the bounds.
    pub(crate) fn prove(&self) {
        let _ = self
            .0
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s != CLOSED).then_some(PROVED)
            });
    }

    /// A request begins; false when the connection was closed for room.
    fn begin(&self) -> bool {
        match self
            .0
            .state
            .compare_exchange(IDLE, BUSY, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(s) => s != CLOSED,
        }
    }

    /// The request was answered.
    fn end(&self) {
        let _ = self
            .0
            .state
            .compare_exchange(BUSY, IDLE, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Closes it for room if it is idle and unproved; true when it did.
    fn evict(&self) -> bool {
        let closed = self
            .0
            .state
            .compare_exchange(IDLE, CLOSED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if closed {
            self.0.evicted.cancel();
        }
        closed
    }
}

/// Marks the connection `req` came on as proved (a request from the
/// listener always carries its mark; one made elsewhere has none to mark).
pub(crate) fn prove<B>(req: &axum::http::Request<B>) {
    if let Some(m) = req.extensions().get::<ConnMark>() {
        m.prove();
    }
}

/// The mark of the connection `req` came on, to prove it later (after an upgrade).
pub(crate) fn mark_of<B>(req: &axum::http::Request<B>) -> Option<ConnMark> {
    req.extensions().get::<ConnMark>().cloned()
}

/// One connection's place; dropping it frees the place.
pub(super) struct Place {
    conns: Arc<Conns>,
    id: u64,
    mark: ConnMark,
}

impl Conns {
    /// Room for `per_peer` connections from one address and `in_all` in all.
    pub(super) fn new(per_peer: usize, in_all: usize) -> Arc<Self> {
        Arc::new(Self {
            per_peer: per_peer.max(1),
            in_all: in_all.max(1),
            state: Mutex::default(),
            refusals: Throttle::new(WARN_EVERY),
        })
    }

    /// A place for a connection from `peer`. At a bound, the oldest
    /// unproved connection that holds the bound (from `peer` at its own,
    /// from anyone in all) is closed for it; `None` when there is none
    /// (logged at most once a minute, with how many were refused).
    pub(super) fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Place> {
        let key = peer_key(peer);
        let mut st = self.lock();
        let from_peer = st.by_peer.get(&key).copied().unwrap_or(0);
        let peer_full = from_peer >= self.per_peer;
        if peer_full || st.open.len() >= self.in_all {
            // The first that can be closed (idle and unproved) is.
            let oldest = st
                .open
                .iter()
                .position(|e| (!peer_full || e.peer == key) && e.mark.evict());
            match oldest {
                Some(i) => {
                    let e = st.open.remove(i);
                    st.forget(e.peer);
                }
                None => {
                    if let Some(n) = self.refusals.due() {
                        tracing::warn!(
                            peer = %key,
                            "the dashboard closed {n} new connection(s) at its bound, every place being proved (this address holds {from_peer} of at most {}; {} of at most {} in all)",
                            self.per_peer,
                            st.open.len(),
                            self.in_all
                        );
                    }
                    return None;
                }
            }
        }
        let id = st.next_id;
        st.next_id += 1;
        let mark = ConnMark::new();
        st.open.push(Entry {
            id,
            peer: key,
            mark: mark.clone(),
        });
        *st.by_peer.entry(key).or_default() += 1;
        Some(Place {
            conns: self.clone(),
            id,
            mark,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section leaves the state whole, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    /// Counts one connection of `peer` fewer.
    fn forget(&mut self, peer: IpAddr) {
        if let Some(n) = self.by_peer.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                self.by_peer.remove(&peer);
            }
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut st = self.conns.lock();
        // An evicted place was forgotten when it was closed for another.
        if let Some(i) = st.open.iter().position(|e| e.id == self.id) {
            let e = st.open.remove(i);
            st.forget(e.peer);
        }
    }
}

/// A connection that holds its place for as long as it is open, also after
/// an upgrade hands it to a WebSocket or a node's shell.
struct Admitted {
    stream: TcpStream,
    _place: Place,
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Serves `app` on `listener`, its connections held to `conns`' bounds,
/// until `stop` fires, then lets the requests being answered finish (the
/// live streams end with the hive). `spawn` runs each connection's task.
pub(super) async fn serve(
    listener: Arc<TcpListener>,
    conns: Arc<Conns>,
    app: Router,
    stop: CancellationToken,
    spawn: impl Fn(Pin<Box<dyn std::future::Future<Output = ()> + Send>>),
) {
    let timeout = head_timeout();
    loop {
        let (stream, peer): (TcpStream, SocketAddr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors, most likely: wait rather than spin.
                    tracing::warn!("the dashboard could not accept a connection: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                        _ = stop.cancelled() => break,
                    }
                }
            },
            _ = stop.cancelled() => break,
        };
        let Some(place) = conns.admit(peer.ip()) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mark = place.mark.clone();
        let evicted = mark.0.evicted.clone();
        let io = TokioIo::new(Admitted {
            stream,
            _place: place,
        });
        let app = app.clone();
        let service = TowerToHyperService::new(tower::service_fn(
            move |mut req: hyper::Request<hyper::body::Incoming>| {
                let (mark, app) = (mark.clone(), app.clone());
                async move {
                    if !mark.begin() {
                        return Ok(axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response());
                    }
                    req.extensions_mut().insert(mark.clone());
                    let answer = tower::ServiceExt::oneshot(app, req).await;
                    mark.end();
                    answer
                }
            },
        ));
        let stop = stop.clone();
        spawn(Box::pin(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(io, service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("a dashboard connection ended: {e}");
                    }
                    return;
                }
                // Closed to make room; an upgraded connection has proved itself.
                _ = evicted.cancelled() => return,
                _ = stop.cancelled() => {}
            }
            // Stopping: no new request on this connection; the one being answered ends.
            conn.as_mut().graceful_shutdown();
            if let Err(e) = conn.await {
                tracing::debug!("a dashboard connection ended: {e}");
            }
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A place, proved at once.
    fn proved(conns: &Arc<Conns>, peer: IpAddr) -> Option<Place> {
        let p = conns.admit(peer)?;
        p.mark.prove();
        Some(p)
    }

    fn evicted(p: &Place) -> bool {
        p.mark.0.evicted.is_cancelled()
    }

    /// A request being answered on an unproved connection (a node's ticket
    /// being checked) is not cut off for room; once answered, it may be.
    #[test]
    fn a_connection_answering_a_request_is_not_closed_for_room() {
        let conns = Conns::new(2, 10);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let checking = conns.admit(a).unwrap();
        let idle = conns.admit(a).unwrap();
        assert!(checking.mark.begin());
        let _new = conns.admit(a).unwrap();
        assert!(evicted(&idle) && !evicted(&checking));
        assert!(!idle.mark.begin(), "a closed one starts no request");
        idle.mark.prove();
        assert!(!idle.mark.begin(), "nor is it proved after");
        checking.mark.end();
        let _newer = conns.admit(a).unwrap();
        assert!(evicted(&checking));
    }

    #[test]
    fn proved_places_are_bounded_per_peer_and_in_all_and_freed_on_drop() {
        let conns = Conns::new(2, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        let a1 = proved(&conns, a).unwrap();
        let _a2 = proved(&conns, a).unwrap();
        assert!(conns.admit(a).is_none(), "a third from one peer");
        let _b1 = proved(&conns, b).unwrap();
        assert!(conns.admit(c).is_none(), "a fourth in all");
        drop(a1);
        assert!(conns.admit(c).is_some(), "a freed place is taken again");
    }

    /// What an agent on a node can do to the node's own address: fill its
    /// places with connections that never log in. The oldest of them goes
    /// for each new one; a proved place is never taken.
    #[test]
    fn at_a_bound_the_oldest_unproved_place_goes_and_a_proved_one_stays() {
        let conns = Conns::new(3, 5);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let op = proved(&conns, a).unwrap();
        let flood1 = conns.admit(a).unwrap();
        let flood2 = conns.admit(a).unwrap();
        let flood3 = conns.admit(a).unwrap();
        assert!(evicted(&flood1) && !evicted(&flood2) && !evicted(&op));
        drop(flood1);
        let fresh = conns.admit(a).unwrap();
        assert!(evicted(&flood2) && !evicted(&flood3) && !evicted(&op));
        fresh.mark.prove();
        let last = conns.admit(a).unwrap();
        assert!(evicted(&flood3), "the last unproved one goes");
        last.mark.prove();
        assert!(conns.admit(a).is_none(), "every place of a is proved");
        // In all (5): a's places are all proved, so b's new connections
        // take the oldest of b's own.
        let b1 = conns.admit(b).unwrap();
        let b2 = conns.admit(b).unwrap();
        let b3 = conns.admit(b).unwrap();
        assert!(evicted(&b1) && !evicted(&b2) && !evicted(&b3));
        assert_eq!(conns.lock().open.len(), 5);
        assert!(!evicted(&op) && !evicted(&fresh));
    }

    #[test]
    fn an_ipv6_slash_64_is_one_peer_and_a_mapped_ipv4_is_its_ipv4() {
        let conns = Conns::new(1, 10);
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _p = proved(&conns, one).unwrap();
        assert!(conns.admit(same_64).is_none());
        assert!(conns.admit(other_64).is_some());
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let _q = proved(&conns, v4).unwrap();
        assert!(conns.admit(mapped).is_none());
    }
}
