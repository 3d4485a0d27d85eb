//! host.sock throughput and latency: `cargo bench -p hive-c0re --bench host_sock`.
//!
//! Serves a real hive (sqlite store on disk, host.sock) in this process and
//! drives it from client threads over the unix socket, as the CLI does.
//! Prints send throughput with 1 and 8 clients, send→recv latency, and how
//! long `agent_status` takes for a hive of 200 agents with a day of history,
//! alone and while 8 clients send (`STATUS_AGENTS` sets the number).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use hive_c0re::store::{Limits, NewAgent, Store};

struct Client {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Client {
    fn new(p: &Path) -> Self {
        let w = UnixStream::connect(p).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        Self { w, r }
    }

    fn call(&mut self, line: &str) -> String {
        self.w.write_all(line.as_bytes()).unwrap();
        self.w.write_all(b"\n").unwrap();
        let mut s = String::new();
        self.r.read_line(&mut s).unwrap();
        s
    }
}

fn throughput(sock: &Path, clients: usize, per_client: usize) -> f64 {
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let sock = sock.to_path_buf();
            std::thread::spawn(move || {
                let mut cl = Client::new(&sock);
                for i in 0..per_client {
                    let a = cl.call(&format!(
                        "{{\"cmd\":\"send\",\"to\":\"operator\",\"body\":\"bench {c}-{i}\"}}"
                    ));
                    assert!(a.contains("\"ok\":true"), "{a}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    (clients * per_client) as f64 / start.elapsed().as_secs_f64()
}

fn drain(sock: &Path) {
    let mut c = Client::new(sock);
    while c
        .call("{\"cmd\":\"recv\",\"max\":1000}")
        .contains("\"body\"")
    {}
}

fn latency(sock: &Path, samples: usize) -> (Duration, Duration) {
    let (tx, rx) = std::sync::mpsc::channel::<Instant>();
    let rsock = sock.to_path_buf();
    let receiver = std::thread::spawn(move || {
        let mut c = Client::new(&rsock);
        for _ in 0..samples {
            let a = c.call("{\"cmd\":\"recv\",\"max\":1,\"wait_ms\":5000}");
            assert!(a.contains("\"body\""), "{a}");
            tx.send(Instant::now()).unwrap();
        }
    });
    let mut s = Client::new(sock);
    let mut lat = Vec::with_capacity(samples);
    std::thread::sleep(Duration::from_millis(50));
    for i in 0..samples {
        let t0 = Instant::now();
        s.call(&format!(
            "{{\"cmd\":\"send\",\"to\":\"operator\",\"body\":\"lat {i}\"}}"
        ));
        let t1 = rx.recv().unwrap();
        lat.push(t1 - t0);
    }
    receiver.join().unwrap();
    lat.sort();
    (lat[samples / 2], lat[samples * 99 / 100])
}

/// Fills the store with `n` agents as a busy day leaves them: turn figures,
/// events with a crash now and then, schedules, budgets in half the configs.
fn populate(db: &Path, n: usize) {
    let store = Store::open(db, Limits::default()).unwrap();
    for i in 0..n {
        let name = format!("agent{i:03}");
        // As spawn writes it (its standing prompt included), a budget in half of them.
        let name_ = hive_sh4re::AgentName::parse(&name).unwrap();
        let mut config = hive_c0re::hive::default_config(&name_);
        if i % 2 == 0 {
            config.budget = Some(hive_sh4re::config::Budget {
                usd_per_day: Some(5.0),
                tokens_per_day: None,
            });
        }
        let config = config.to_toml();
        store
            .create_agent(&NewAgent {
                name: &name,
                harness: "claude",
                config_toml: &config,
                deployed_sha: None,
                parent: None,
                want_running: false,
                uid_base: 1_000_000 + i as u32 * 65_536,
                node: "bench",
            })
            .unwrap();
        for _ in 0..50 {
            store
                .add_stats(
                    &name,
                    [
                        ("cost.usd", 0.01),
                        ("tokens.in", 900.0),
                        ("tokens.out", 120.0),
                    ],
                )
                .unwrap();
            store
                .add_events(
                    &name,
                    [
                        ("turn_start", "{}"),
                        ("tool_use", "{\"tool\":\"Bash\"}"),
                        ("turn_end", "{}"),
                    ],
                )
                .unwrap();
        }
        if i % 10 == 0 {
            store
                .add_events(
                    &name,
                    [(
                        "container_crash",
                        "{\"exit\":\"exit status 1\",\"log_tail\":\"boom\",\"attempt\":1,\"gave_up\":false}",
                    )],
                )
                .unwrap();
        }
        store
            .add_schedule(
                &name,
                "every 1h",
                "check in",
                true,
                i64::MAX / 2,
                "operator",
            )
            .unwrap();
    }
}

/// `agent_status` round trips, p50 and p99, over `samples` calls; with `load`
/// client threads sending meanwhile when it is not 0.
fn status_latency(sock: &Path, samples: usize, load: usize) -> (f64, f64, usize) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders: Vec<_> = (0..load)
        .map(|c| {
            let sock = sock.to_path_buf();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut cl = Client::new(&sock);
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    cl.call(&format!(
                        "{{\"cmd\":\"send\",\"to\":\"operator\",\"body\":\"c{c} m{i}\"}}"
                    ));
                    i += 1;
                }
            })
        })
        .collect();
    let mut c = Client::new(sock);
    let mut rows = 0;
    let mut lat = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        let a = c.call("{\"cmd\":\"agent_status\"}");
        lat.push(t.elapsed());
        rows = a.matches("\"inbox_depth\"").count();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in senders {
        s.join().unwrap();
    }
    lat.sort();
    (common::pct_ms(&lat, 0.5), common::pct_ms(&lat, 0.99), rows)
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let hive = common::in_process_hive(
        &rt,
        dir.path(),
        Limits {
            inbox_cap: u64::MAX,
            ..Limits::default()
        },
    );
    let sock = hive.paths().host_sock();

    throughput(&sock, 1, 2000); // warm-up
    drain(&sock);
    let one = throughput(&sock, 1, 20_000);
    drain(&sock);
    let eight = throughput(&sock, 8, 5_000);
    drain(&sock);
    let (p50, p99) = latency(&sock, 2_000);
    println!("host.sock send throughput, 1 client:  {one:>9.0} messages/s");
    println!("host.sock send throughput, 8 clients: {eight:>9.0} messages/s   (goal >= 20000)");
    println!(
        "send -> recv latency over 2000 messages: p50 {:.3} ms, p99 {:.3} ms   (goal p99 < 5 ms)",
        ms(p50),
        ms(p99)
    );
    drop(hive);
    drop(rt);

    let agents: usize = std::env::var("STATUS_AGENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    populate(&dir.path().join("state").join("hive.db"), agents);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let hive = common::in_process_hive(&rt, dir.path(), Limits::default());
    let sock = hive.paths().host_sock();
    status_latency(&sock, 20, 0); // warm-up
    let (p50, p99, rows) = status_latency(&sock, 300, 0);
    assert_eq!(
        rows, agents,
        "agent_status answered {rows} rows of {agents}"
    );
    println!("agent_status, {agents} agents:                p50 {p50:.2} ms, p99 {p99:.2} ms");
    let (p50, p99, _) = status_latency(&sock, 300, 8);
    println!(
        "agent_status, {agents} agents, 8 clients sending: p50 {p50:.2} ms, p99 {p99:.2} ms   (goal p99 < 100 ms)"
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
