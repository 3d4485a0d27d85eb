//! A TCP relay between a node and its PostgreSQL server that can lose the
//! server's answer to one request on cue: a commit the node never hears of.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the server keeps answering into the void before the cut: time
/// for the rest of the request (its COMMIT) to reach it and be done.
const SERVER_GETS_ON: Duration = Duration::from_millis(300);

/// A relay on a free loopback port to a server at `127.0.0.1:upstream`.
pub struct LossyRelay {
    pub port: u16,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    upstream: u16,
    /// The bytes whose request loses its answer, while armed.
    pattern: Mutex<Option<(Vec<u8>, Duration)>>,
    /// New connections are refused until then.
    down_until: Mutex<Option<Instant>>,
    /// Every relayed connection's two sockets, for the cut.
    open: Mutex<Vec<(TcpStream, TcpStream)>>,
    tripped: AtomicBool,
}

impl Shared {
    /// True from the cut until the outage ends.
    fn is_down(&self) -> bool {
        self.down_until
            .lock()
            .unwrap()
            .is_some_and(|t| Instant::now() < t)
    }
}

impl LossyRelay {
    /// Starts relaying to the PostgreSQL server on `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream,
            ..Shared::default()
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", s.upstream)) else {
                    continue;
                };
                // Checked and registered under the lock the cut takes: a
                // connection accepted just before the cut is cut with the
                // rest, not left open through the outage.
                {
                    let mut open = s.open.lock().unwrap();
                    if s.is_down() {
                        continue;
                    }
                    open.push((client.try_clone().unwrap(), server.try_clone().unwrap()));
                }
                relay(&s, client, server);
            }
        });
        Self { port, shared }
    }

    /// Arms the relay: the first connection that carries `pattern` to the
    /// server hears nothing back from then on; shortly after, every
    /// connection is cut and new ones are refused for `down`.
    pub fn lose_answer_to(&self, pattern: &[u8], down: Duration) {
        *self.shared.pattern.lock().unwrap() = Some((pattern.to_vec(), down));
    }

    /// True once an answer was lost.
    pub fn tripped(&self) -> bool {
        self.shared.tripped.load(Ordering::SeqCst)
    }

    /// Waits until the relay has lost its answer and takes connections again.
    pub fn wait_until_back(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let back = self.tripped()
                && self
                    .shared
                    .down_until
                    .lock()
                    .unwrap()
                    .is_some_and(|t| Instant::now() >= t);
            if back {
                return;
            }
            assert!(Instant::now() < deadline, "the relay never lost its answer");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn relay(s: &Arc<Shared>, client: TcpStream, server: TcpStream) {
    let lost = Arc::new(AtomicBool::new(false));
    // Node to server: watched for the pattern, always passed on.
    let (mut from, mut to) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let (shared, conn_lost) = (s.clone(), lost.clone());
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut tail: Vec<u8> = vec![];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&buf[..n]);
            trip_on(&shared, &tail, &conn_lost);
            let keep = tail.len().saturating_sub(256);
            tail.drain(..keep);
            // The cut shuts the connections one by one, and a loaded machine
            // may pause it between two: a connection not yet shut carries
            // nothing once the outage has begun.
            if shared.is_down() || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    // Server to node: dropped once this connection's answer is lost.
    let (mut from, mut to) = (server, client);
    let shared = s.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || shared.is_down() {
                break;
            }
            if !lost.load(Ordering::SeqCst) && to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// When `seen` holds the armed pattern: this connection's answers are lost,
/// and a moment later the server is cut off from every node connection.
fn trip_on(s: &Arc<Shared>, seen: &[u8], lost: &AtomicBool) {
    let mut armed = s.pattern.lock().unwrap();
    let Some((pattern, down)) = armed.as_ref() else {
        return;
    };
    if !seen.windows(pattern.len()).any(|w| w == pattern.as_slice()) {
        return;
    }
    let down = *down;
    *armed = None;
    lost.store(true, Ordering::SeqCst);
    s.tripped.store(true, Ordering::SeqCst);
    let s = s.clone();
    std::thread::spawn(move || {
        std::thread::sleep(SERVER_GETS_ON);
        let mut open = s.open.lock().unwrap();
        *s.down_until.lock().unwrap() = Some(Instant::now() + down);
        for (a, b) in open.drain(..) {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    });
}
