//! host.sock throughput and latency: `cargo bench -p hive-c0re --bench host_sock`.
//!
//! Serves a real hive (its store on disk or in PostgreSQL, host.sock) in this process and
//! drives it from client threads over the unix socket, as the CLI does.
//! Prints send throughput with 1 and 8 clients to the operator, and with 8
//! clients each sending to an agent of its own (with the CPU each message
//! cost this process and PostgreSQL's server), and send→recv latency on
//! sqlite and on PostgreSQL (a throwaway cluster), the cross-node wake (a
//! send on one node's host.sock until a recv waiting on another node's
//! returns it), and how long `agent_status` takes for a hive of 200 agents
//! with a day of history, alone and while 8 clients send (`STATUS_AGENTS`
//! sets the number). `-- NAME` runs only the parts whose name holds NAME
//! (`sqlite`, `postgres`, `status`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use hive_c0re::store::pg::{PgStore, TestCluster};
use hive_c0re::store::{Db, Limits, NewAgent, Store};

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

/// Who the throughput clients send to.
#[derive(Clone, Copy)]
enum To {
    /// All to the operator: one mailbox, as agents reporting in make it.
    Operator,
    /// Client `c` to agent `bench-c`: an operator's send to an agent is also
    /// noted in the agent's history and samples its inbox.
    OwnAgent,
}

/// `clients` clients sending `per_client` each, each awaiting its answer before the next.
fn throughput(sock: &Path, clients: usize, per_client: usize, to: To) -> f64 {
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let sock = sock.to_path_buf();
            std::thread::spawn(move || {
                let mut cl = Client::new(&sock);
                for i in 0..per_client {
                    let a = cl.call(&format!(
                        "{{\"cmd\":\"send\",\"to\":\"{}\",\"body\":\"bench {c}-{i}\"}}",
                        match to {
                            To::Operator => "operator".to_owned(),
                            To::OwnAgent => format!("bench-{c}"),
                        }
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

/// Empties the inboxes the throughput clients fill.
fn drain(sock: &Path) {
    let mut c = Client::new(sock);
    let inboxes =
        std::iter::once("operator".to_owned()).chain((0..CLIENTS).map(|a| format!("bench-{a}")));
    for inbox in inboxes {
        while c
            .call(&format!(
                "{{\"cmd\":\"recv\",\"as\":\"{inbox}\",\"max\":1000}}"
            ))
            .contains("\"body\"")
        {}
    }
}

/// The most throughput clients, each with an agent of its own to send to.
const CLIENTS: usize = 8;

/// Stores the agents the throughput clients send to (stopped: nobody reads them).
fn add_bench_agents(rt: &tokio::runtime::Runtime, db: &Db) {
    rt.block_on(async {
        for c in 0..CLIENTS {
            let name = format!("bench-{c}");
            let config =
                hive_c0re::hive::default_config(&hive_sh4re::AgentName::parse(&name).unwrap());
            db.create_agent(&NewAgent {
                name: &name,
                harness: "claude",
                config_toml: &config.to_toml(),
                deployed_sha: None,
                parent: None,
                want_running: false,
                uid_base: 2_000_000 + c as u32 * 65_536,
                node: "alpha",
            })
            .await
            .unwrap();
        }
    });
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

/// Send throughput with 1 and 8 clients and send -> recv latency on one
/// node's host.sock; prints them under `label`.
fn sends(sock: &Path, label: &str, goal: u32) {
    throughput(sock, 1, 2000, To::Operator); // warm-up
    drain(sock);
    let one = throughput(sock, 1, 20_000, To::Operator);
    drain(sock);
    let cpu = common::CpuSplit::now();
    let eight = throughput(sock, CLIENTS, 5_000, To::Operator);
    let eight_cpu = cpu.since(CLIENTS * 5_000);
    drain(sock);
    let cpu = common::CpuSplit::now();
    let agents = throughput(sock, CLIENTS, 2_500, To::OwnAgent);
    let agents_cpu = cpu.since(CLIENTS * 2_500);
    drain(sock);
    let lat = round_trips(sock, sock, 2_000);
    let (p50, p99) = (common::pct_ms(&lat, 0.5), common::pct_ms(&lat, 0.99));
    println!("{label}: host.sock send throughput, 1 client:  {one:>9.0} messages/s");
    println!(
        "{label}: host.sock send throughput, 8 clients: {eight:>9.0} messages/s   (goal >= {goal})"
    );
    println!("{label}:   {eight_cpu}");
    println!(
        "{label}: host.sock send throughput, 8 clients each to an agent of its own: {agents:>9.0} messages/s"
    );
    println!("{label}:   {agents_cpu}");
    println!("{label}: send -> recv latency over 2000 messages: p50 {p50:.3} ms, p99 {p99:.3} ms");
}

/// Sends to the operator on `send_on` until the recv waiting on `recv_on`
/// returns it, one message at a time; the times, sorted. Across nodes the
/// other node hears of it by the store's wake, as a harness waiting on its
/// agent socket does.
fn round_trips(send_on: &Path, recv_on: &Path, samples: usize) -> Vec<Duration> {
    let (tx, rx) = std::sync::mpsc::channel::<Instant>();
    let rsock = recv_on.to_path_buf();
    let receiver = std::thread::spawn(move || {
        let mut c = Client::new(&rsock);
        for _ in 0..samples {
            let a = c.call("{\"cmd\":\"recv\",\"max\":1,\"wait_ms\":5000}");
            assert!(a.contains("\"body\""), "{a}");
            tx.send(Instant::now()).unwrap();
        }
    });
    let mut s = Client::new(send_on);
    let mut lat = Vec::with_capacity(samples);
    for i in 0..samples {
        // The receiver is waiting again before the next send.
        std::thread::sleep(Duration::from_millis(2));
        let t0 = Instant::now();
        s.call(&format!(
            "{{\"cmd\":\"send\",\"to\":\"operator\",\"body\":\"rt {i}\"}}"
        ));
        lat.push(rx.recv().unwrap() - t0);
    }
    receiver.join().unwrap();
    lat.sort();
    lat
}

fn main() {
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let run = |part: &str| only.as_deref().is_none_or(|o| part.contains(o));
    let limits = Limits {
        inbox_cap: u64::MAX,
        ..Limits::default()
    };
    if run("sqlite") {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let db_file = dir.path().join("state").join("hive.db");
        std::fs::create_dir_all(db_file.parent().unwrap()).unwrap();
        let db = Db::open_sqlite(&db_file, limits.clone()).unwrap();
        add_bench_agents(&rt, &db);
        let hive = common::in_process_node(&rt, dir.path(), db, "alpha");
        sends(&hive.paths().host_sock(), "sqlite", 20_000);
        drop(hive);
        drop(rt);
    }
    if run("postgres") {
        // Two nodes of one hive in this process, on a throwaway cluster with
        // fsync and synchronous commit on, as a real server has them.
        let cluster =
            TestCluster::start(true).expect("a throwaway PostgreSQL cluster (run scripts/deps.sh)");
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (alpha, beta) = rt.block_on(async {
            let database = cluster.database().await;
            let open = || async {
                let resolved = cluster.settings(&database).resolve(&|_| None).unwrap();
                Db::Postgres(PgStore::open(resolved, limits.clone()).await.unwrap())
            };
            (open().await, open().await)
        });
        add_bench_agents(&rt, &alpha);
        let alpha = common::in_process_node(&rt, a.path(), alpha, "alpha");
        let beta = common::in_process_node(&rt, b.path(), beta, "beta");
        let (alpha_sock, beta_sock) = (alpha.paths().host_sock(), beta.paths().host_sock());
        sends(&alpha_sock, "PostgreSQL", 10_000);
        round_trips(&alpha_sock, &beta_sock, 50); // warm-up
        let lat = round_trips(&alpha_sock, &beta_sock, 500);
        let (p50, p99, max) = (
            common::pct_ms(&lat, 0.5),
            common::pct_ms(&lat, 0.99),
            ms(lat[lat.len() - 1]),
        );
        println!(
            "PostgreSQL: cross-node send (alpha's host.sock) -> recv waiting on beta's returns, 500 one at a time: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms   (goal p99 < 20 ms)"
        );
        drop((alpha, beta));
        drop(rt);
        drop(cluster);
    }
    if !run("status") {
        return;
    }

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
