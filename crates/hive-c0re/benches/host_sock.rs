//! host.sock throughput and latency: `cargo bench -p hive-c0re --bench host_sock`.
//!
//! Serves a real hive (sqlite store on disk, host.sock) in this process and
//! drives it from client threads over the unix socket, as the CLI does.
//! Prints send throughput with 1 and 8 clients and send→recv latency.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use hive_c0re::store::Limits;

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
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
