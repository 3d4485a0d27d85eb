//! Event ingest through agent sockets into the store:
//! `cargo bench -p hive-c0re --bench ingest`.
//!
//! Ten agents stream claude's output at once, as harnesses do: batches of
//! stream-json lines on each agent's own socket. Prints events/s.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

mod common;

use hive_c0re::store::Limits;
use hive_sh4re::AgentName;

const AGENTS: usize = 10;
const BATCHES: usize = 400;
const BATCH: usize = 100;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let names: Vec<AgentName> = (0..AGENTS)
        .map(|i| AgentName::parse(&format!("agent-{i}")).unwrap())
        .collect();
    let hive = common::in_process_hive(
        &rt,
        dir.path(),
        Limits {
            events_keep: u64::MAX,
            ..Limits::default()
        },
    );
    let _guard = rt.enter();
    for n in &names {
        rt.block_on(hive.add_stopped(n, "")).unwrap();
        rt.block_on(hive.open_socket(n)).unwrap();
    }
    // A realistic line: an assistant message with a tool call, ~300 bytes.
    let item = r#"{"kind":"stream","payload":{"type":"assistant","message":{"id":"msg_1","content":[{"type":"tool_use","id":"toolu_1","name":"mcp__hyperhive__send","input":{"to":"operator","body":"a reply of some length to make the line realistic"}}]},"session_id":"0b6c8f7e"}}"#;
    let line = format!(
        "{{\"op\":\"events\",\"items\":[{}]}}\n",
        vec![item; BATCH].join(",")
    );

    let start = Instant::now();
    let threads: Vec<_> = names
        .iter()
        .map(|n| {
            let sock = hive.paths().agent_sock(n);
            let line = line.clone();
            std::thread::spawn(move || {
                let mut w = UnixStream::connect(sock).unwrap();
                let mut r = BufReader::new(w.try_clone().unwrap());
                let mut answer = String::new();
                for _ in 0..BATCHES {
                    w.write_all(line.as_bytes()).unwrap();
                    answer.clear();
                    r.read_line(&mut answer).unwrap();
                    assert!(answer.contains("\"ok\":true"), "{answer}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let total = AGENTS * BATCHES * BATCH;
    let (mut stored, mut since) = (0, 0);
    loop {
        let page = rt
            .block_on(hive.events(&names[0], Some(since), None, 5000))
            .unwrap();
        let Some(last) = page.last() else { break };
        since = last.id;
        stored += page.len();
    }
    assert_eq!(stored, BATCHES * BATCH);
    println!(
        "event ingest, {AGENTS} agents streaming at once ({BATCH} events per request): {total} events in {secs:.2}s = {:.0} events/s   (goal >= 50000)",
        total as f64 / secs
    );
    drop(rt);
}
