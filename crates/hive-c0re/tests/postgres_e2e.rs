//! A hive on PostgreSQL end to end (`serve --database`), on a throwaway
//! cluster of the test binary's own: a real claude agent through the scripted
//! model answers the operator, status shows it on its node, a kill -9 of
//! hive-c0re and a restart on the same database lose no message, and the
//! agent's environment holds neither the database's URL nor its password.
//! Also what serve says when the database is unreachable or its password is
//! on the command line, and what a running node does while its database is
//! out of reach, a send's commit it never heard of and a turn's end it
//! dropped included. Skipped (with a note) where PostgreSQL is not installed.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;

use common::webhook::{Receiver, start_receiver};
use common::{ModelSim, Opts, TestDatabase, TestHive};

/// `ping` is answered with `pong`; `print your environment` runs `env` and
/// relays what it printed to the operator.
const SCRIPT: &str = r#"
[[rule]]
name = "ping"
user_text = "ping"
[[rule.reply]]
tool = "mcp__hyperhive__send"
input = { to = "operator", body = "pong" }

[[rule]]
name = "slow"
user_text = "slow"
delay_ms = 3000
[[rule.reply]]
tool = "mcp__hyperhive__send"
input = { to = "operator", body = "done: {{body}}" }

[[rule]]
name = "probe"
user_text = "probe"
[[rule.reply]]
tool = "mcp__hyperhive__send"
input = { to = "operator", body = "answer: probe" }

[[rule]]
name = "env"
user_text = "print your environment"
[[rule.reply]]
tool = "Bash"
input = { command = "env" }

[[rule]]
name = "relay"
tool_result = "PATH="
[[rule.reply]]
tool = "mcp__hyperhive__send"
input = { to = "operator", body = "env: {{tool_result}}" }
"#;

/// How many turns alice has finished.
fn turn_ends(hive: &TestHive) -> usize {
    hive.events("alice")
        .iter()
        .filter(|e| e["kind"] == "turn_end")
        .count()
}

/// A hive on `db` as node alpha, its model the scripted [`SCRIPT`], `env`
/// added to serve's environment, and alice spawned (with `config`) and running.
fn alice_on(db: &TestDatabase, env: &[(&str, &str)], config: Option<&str>) -> (ModelSim, TestHive) {
    let sim = ModelSim::start(Some(SCRIPT));
    let mut opts = Opts::postgres(db, "alpha");
    opts.env.extend(sim.env());
    opts.env
        .extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let hive = TestHive::start_with(opts);
    hive.ok(&["spawn", "alice"]);
    if let Some(toml) = config {
        hive.deploy_config("alice", toml);
    }
    hive.wait_for("alice running", 30, |h| {
        h.row("alice").unwrap()["running"] == true
    });
    (sim, hive)
}

/// A fresh database for a test with a real claude agent; None (the test
/// passes as skipped, with a note) without claude or PostgreSQL.
fn e2e_database() -> Option<TestDatabase> {
    if !common::e2e_ready() {
        return None;
    }
    TestDatabase::create()
}

/// The dashboard token of [`alpha_beating_every`]'s hive.
const TOKEN: &str = "postgres-e2e-token";

/// A hive on `db` as node alpha, with no agents, heartbeating every `secs`
/// seconds, its dashboard on a free loopback port (token [`TOKEN`]).
fn alpha_beating_every(db: &TestDatabase, secs: &str) -> TestHive {
    alpha_beating_every_with(db, secs, &[])
}

/// [`alpha_beating_every`] with more of serve's environment.
fn alpha_beating_every_with(db: &TestDatabase, secs: &str, env: &[(&str, &str)]) -> TestHive {
    let mut opts = Opts::postgres(db, "alpha");
    opts.args.retain(|a| a != "--no-dashboard");
    opts.args
        .extend(["--dashboard".into(), "127.0.0.1:0".into()]);
    opts.env.extend([
        ("HIVE_HEARTBEAT_SECS".into(), secs.into()),
        ("HIVE_DASHBOARD_TOKEN".into(), TOKEN.into()),
    ]);
    opts.env
        .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    started(TestHive::start_with(opts))
}

/// `hive` once serve has finished starting: host.sock answers before serve
/// starts its agents, and a database taken away before then delays the
/// start, which the outage tests do not mean to test.
fn started(hive: TestHive) -> TestHive {
    hive.wait_for("serve through its start", 30, |h| {
        h.log().contains("hive-c0re is serving")
    });
    hive
}

/// The database alarm alpha's dashboard serves (`http://HOST:PORT/` is its address).
fn database_alarm(address: &str) -> serde_json::Value {
    common::database_alarm_at(address, TOKEN)
}

/// The text of the one `node_down` notification that tells an outage of
/// alpha's database, once it has come; the beat that told it cleared the
/// dashboard's alarm (alpha's dashboard is at `address`).
fn outage_told(hive: &TestHive, address: &str) -> String {
    hive.wait_for("the outage told to the operator", 20, |h| {
        !h.notifications_of("node_down").is_empty()
    });
    assert!(
        database_alarm(address).is_null(),
        "cleared by the beat that told it"
    );
    let told = hive.notifications_of("node_down");
    assert_eq!(told.len(), 1, "{told:?}");
    told[0]["text"].as_str().unwrap().to_owned()
}

/// Alpha's line of `nodes --json`.
fn alpha_node(hive: &TestHive) -> serde_json::Value {
    serde_json::from_str(hive.ok(&["nodes", "--json"]).trim()).unwrap()
}

/// The last heartbeat `nodes --json` shows for alpha.
fn alphas_heartbeat(hive: &TestHive) -> String {
    alpha_node(hive)["last_heartbeat"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Sends `text` to alice and waits for her one answer and the end of her turn.
fn ask_alice(hive: &TestHive, text: &str) -> String {
    let ended = turn_ends(hive);
    hive.ok(&["send", "alice", text]);
    let got = hive.recv_operator(90);
    assert_eq!(got.len(), 1, "{text}: {got:?}\n{}", hive.log());
    hive.wait_for("alice's turn to end", 30, |h| turn_ends(h) > ended);
    got[0]["body"].as_str().unwrap().to_owned()
}

/// Fails when `text` holds the database's URL, its password, or the variables that carry them.
fn assert_no_database(what: &str, text: &str, db: &TestDatabase) {
    for leak in [
        db.password.as_str(),
        db.url.as_str(),
        "postgres://",
        "PGPASSWORD",
        "HIVE_DATABASE",
    ] {
        assert!(!text.contains(leak), "{what} holds {leak:?}:\n{text}");
    }
}

#[test]
fn a_hive_on_postgres_runs_an_agent_and_keeps_its_messages_across_a_kill_9() {
    let Some(db) = e2e_database() else {
        return;
    };
    let (sim, mut hive) = alice_on(&db, &[], Some("allowed_tools = [\"Bash(env)\"]\n"));

    // Operator -> agent turn -> reply, all through PostgreSQL.
    assert_eq!(ask_alice(&hive, "ping"), "pong");
    let status = hive.ok(&["status", "--json"]);
    let row: serde_json::Value = status
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["name"] == "alice")
        .unwrap_or_else(|| panic!("no alice in status: {status}"));
    assert_eq!(row["node"], "alpha", "{row}");
    assert_eq!(row["running"], true, "{row}");

    // The agent's environment: what its claude's shell prints, and what the
    // kernel holds for each of its processes.
    let printed = ask_alice(&hive, "print your environment");
    assert!(
        printed.contains("HIVE_AGENT_SOCK="),
        "env printed nothing useful: {printed}"
    );
    assert_no_database("what alice's shell printed", &printed, &db);
    let pids = common::agent_pids(&hive, "alice");
    assert!(!pids.is_empty(), "no process of alice found");
    for pid in pids {
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
            let env = String::from_utf8_lossy(&env).replace('\0', "\n");
            assert_no_database(&format!("/proc/{pid}/environ of alice"), &env, &db);
        }
    }
    assert!(
        !hive.log().contains(&db.password),
        "the log holds the password"
    );

    // A reply waiting for the operator and two messages waiting for a paused
    // alice survive a kill -9 of hive-c0re and a restart on the same database.
    let ended = turn_ends(&hive);
    hive.ok(&["send", "alice", "ping"]);
    hive.wait_for("alice's reply to wait for the operator", 90, |h| {
        turn_ends(h) > ended
    });
    hive.ok(&["pause", "alice"]);
    hive.ok(&["send", "alice", "ping"]);
    hive.ok(&["send", "alice", "ping"]);
    hive.kill9();
    hive.serve();
    let waiting = hive.recv_operator(5);
    assert_eq!(waiting.len(), 1, "{waiting:?}\n{}", hive.log());
    assert_eq!(waiting[0]["body"], "pong");
    hive.wait_for("alice running again on her node", 30, |h| {
        h.row("alice").is_some_and(|r| r["running"] == true)
    });
    assert_eq!(
        hive.row("alice").unwrap()["inbox_depth"],
        2,
        "{}",
        hive.log()
    );
    // One turn takes both (a turn reads every waiting message) and answers once.
    let seen = sim.requests().len();
    hive.ok(&["resume", "alice"]);
    let got = hive.recv_operator(90);
    assert_eq!(got.len(), 1, "{got:?}\n{}", hive.log());
    assert_eq!(got[0]["body"], "pong");
    hive.wait_for("both messages delivered", 30, |h| {
        h.row("alice").unwrap()["inbox_depth"] == 0
    });
    let asked = sim.requests()[seen..]
        .iter()
        .map(|r| r["messages"].to_string())
        .find(|m| m.contains(">ping</message>"))
        .expect("the turn reached the model");
    // The session is resumed: the turn's own prompt is the last one.
    let last = asked.rsplit("New messages in your inbox").next().unwrap();
    assert_eq!(last.matches(">ping</message>").count(), 2, "{last}");
}

/// A database that goes away while serve starts delays the start and ends
/// nothing: serve says so, tries again, and once the database is back it
/// serves and runs the agent it ran before. (Before, serve ended with the
/// error and left its agents stopped until something started it again.)
#[test]
fn a_database_gone_while_serve_starts_delays_the_start_and_ends_nothing() {
    let Some(db) = e2e_database() else {
        return;
    };
    let (_sim, mut hive) = alice_on(&db, &[], None);
    hive.stop();

    // The next start stops at its registration, behind a lock the test
    // holds, and the database goes away right then.
    let held = db.lock("nodes");
    let outage = std::thread::scope(|s| {
        let outage = s.spawn(|| {
            db.wait_for_lock_waiter("INSERT INTO nodes");
            db.take_away_waiting_in("INSERT INTO nodes");
            std::thread::sleep(std::time::Duration::from_secs(2));
            db.set_reachable(true);
        });
        hive.serve();
        outage.join()
    });
    outage.unwrap();
    drop(held);
    let hive = started(hive);
    assert!(
        hive.log()
            .contains("the database is out of reach while registering this node; trying again in"),
        "{}",
        hive.log()
    );
    hive.wait_for("alice running again", 30, |h| {
        h.row("alice").is_some_and(|r| r["running"] == true)
    });
    assert_eq!(ask_alice(&hive, "ping"), "pong");
}

/// A stop signal ends a serve that waits for its database during its
/// start, at once and with success.
#[test]
fn a_serve_waiting_for_its_database_at_start_stops_when_told() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    drop(db.store()); // the schema, so there is a table to lock
    let held = db.lock("nodes");
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut serve = serve_command(dir.path())
        .env("PGPASSWORD", &db.password)
        .args(["--database", &db.url, "--node", "alpha"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let said = || std::fs::read_to_string(&log_path).unwrap_or_default();
    db.wait_for_lock_waiter("INSERT INTO nodes");
    db.take_away_waiting_in("INSERT INTO nodes");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !said().contains("trying again in") {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for serve to wait for the database:\n{}",
            said()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let asked = std::time::Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(serve.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break status;
        }
        if asked.elapsed() > std::time::Duration::from_secs(10) {
            let _ = serve.kill();
            panic!("serve did not end within 10 s of SIGTERM:\n{}", said());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    drop(held);
    db.set_reachable(true);
    assert!(status.success(), "{status}:\n{}", said());
    assert!(
        said().contains("shutting down before the start was done"),
        "{}",
        said()
    );
}

/// `hive-c0re serve` with its state and run dirs in `dir`, no config file,
/// no dashboard and no manager, its stdin closed: add the database's flags.
fn serve_command(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hive-c0re"));
    cmd.env("HIVE_STATE_DIR", dir.join("state"))
        .env("HIVE_RUN_DIR", dir.join("run"))
        .env("HIVE_CONFIG", "/dev/null")
        .args([
            "serve",
            "--runtime",
            "process",
            "--no-dashboard",
            "--no-manager",
        ])
        .stdin(Stdio::null());
    cmd
}

/// `hive-c0re serve` with `args`, in a state dir of its own; its exit code and what it printed.
fn serve_fails(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = serve_command(dir.path())
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), said)
}

#[test]
fn serve_refuses_a_password_on_its_command_line_and_says_which_database_it_cannot_reach() {
    let (code, said) = serve_fails(
        &[
            "--database",
            "postgres://node:s3cret-pw@db.example.org/hive",
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains("command line") && said.contains("node:<hidden>@db.example.org/hive"),
        "{said}"
    );
    assert!(!said.contains("s3cret-pw"), "{said}");

    // Nothing listens on port 1: one sentence naming the database, no stack trace.
    let (code, said) = serve_fails(
        &[
            "--database",
            "postgres://hive_node@127.0.0.1:1/hive?sslmode=disable",
        ],
        &[("PGPASSWORD", "pw-from-the-env")],
    );
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains("could not connect to PostgreSQL at hive_node@127.0.0.1:1/hive")
            && said.contains("check"),
        "{said}"
    );
    assert!(
        !said.contains("pw-from-the-env") && !said.contains("panicked"),
        "{said}"
    );
}

#[test]
fn a_password_in_a_query_parameter_or_a_key_value_string_is_never_printed() {
    use std::os::unix::fs::PermissionsExt;
    // Each form tokio-postgres reads a password from: a URL's query
    // parameter (its key escaped or not), a key=value string's key (quoted
    // or not). Nothing listens on port 1, so serve logs that it connects,
    // then fails with a sentence; `--print-config` shows the setting.
    let forms = [
        "postgres://hive_node@127.0.0.1:1/hive?sslmode=disable&password=qu3ry-s3cret",
        "postgres://hive_node@127.0.0.1:1/hive?pass%77ord=qu3ry-s3cret",
        "host=127.0.0.1 port=1 user=hive_node password=qu3ry-s3cret dbname=hive sslmode=disable",
        "host=127.0.0.1 port=1 user=hive_node password = 'qu3ry s3cret' dbname=hive",
    ];
    for url in forms {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hive.toml");
        std::fs::write(&file, format!("database = {url:?}\n")).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let file = file.to_str().unwrap();

        let (code, said) = serve_fails(&["--config", file], &[("RUST_LOG", "info")]);
        assert_eq!(code, Some(2), "{url}: {said}");
        assert!(
            said.contains("connecting to PostgreSQL")
                && said.contains("could not connect to PostgreSQL at hive_node@127.0.0.1:1/hive")
                && said.contains("<hidden>"),
            "{url}: {said}"
        );
        let (code, printed) = serve_fails(&["--config", file, "--print-config"], &[]);
        assert_eq!(code, Some(0), "{url}: {printed}");
        assert!(
            printed.contains("database = ") && printed.contains("<hidden>"),
            "{printed}"
        );
        // On the command line it is refused, and the refusal does not repeat it either.
        let (code, refused) = serve_fails(&["--database", url], &[]);
        assert_eq!(code, Some(2), "{url}: {refused}");
        assert!(refused.contains("command line"), "{url}: {refused}");
        for out in [&said, &printed, &refused] {
            assert!(!out.contains("s3cret"), "{url}: {out}");
        }
    }
}

/// Two nodes on one database: the operator on alpha sends to an agent whose
/// home is beta; beta's agent is woken by alpha's commit (not by the slow
/// re-check, 30 s), and its answer, committed on beta, wakes alpha's `recv
/// --wait`. Without wakes across nodes neither would come.
#[test]
fn a_send_on_one_node_wakes_an_agent_on_another_and_its_answer_wakes_back() {
    let Some(db) = e2e_database() else {
        return;
    };
    let sim = ModelSim::start(Some(SCRIPT));
    let start = |node: &str| {
        let mut opts = Opts::postgres(&db, node);
        opts.env.extend(sim.env());
        TestHive::start_with(opts)
    };
    let alpha = start("alpha");
    let beta = start("beta");
    beta.ok(&["spawn", "alice"]);
    beta.wait_for("alice running on beta", 30, |h| {
        h.row("alice").unwrap()["running"] == true
    });
    assert_eq!(alpha.row("alice").unwrap()["node"], "beta");

    for round in 0..2 {
        let sent = std::time::Instant::now();
        alpha.ok(&["send", "alice", "ping"]);
        // Well under the 30 s re-check: only a wake can bring it this soon.
        let got = alpha.recv_operator(25);
        let took = sent.elapsed();
        assert_eq!(got.len(), 1, "round {round}: {got:?}\n{}", beta.log());
        assert_eq!(got[0]["body"], "pong");
        assert_eq!(got[0]["from"], "alice");
        eprintln!(
            "round {round}: sent on alpha, answered from beta, received on alpha in {took:?}"
        );
        beta.wait_for("alice's turn to end", 30, |h| turn_ends(h) > round);
    }
}

/// A database out of reach while a node runs: each request fails at once
/// with a sentence saying so (a `recv` never answers "nothing" for an inbox
/// it cannot read), nothing stored before is lost, the node works again by
/// itself once the database is back, and the operator then finds a
/// notification saying how long it was out.
#[test]
fn a_database_out_of_reach_fails_requests_with_a_sentence_loses_nothing_and_is_told_after() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let hive = alpha_beating_every(&db, "1");
    let address = alpha_node(&hive)["address"].as_str().unwrap().to_owned();
    assert!(database_alarm(&address).is_null());
    let (rt, store) = db.store();
    rt.block_on(store.send("w", "operator", "stored before"))
        .unwrap();

    db.set_reachable(false);
    for args in [
        &["status"][..],
        &["recv", "--as", "operator"],
        &["send", "w", "during"],
    ] {
        let out = hive.cli(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && out.stdout.is_empty()
                && err.contains("this node cannot reach the hive's database (")
                && err.contains("check that the PostgreSQL server is up"),
            "{args:?}: {out:?}"
        );
    }
    // A few heartbeats fail; every dashboard page shows why meanwhile.
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    assert!(hive.log().contains("could not store this node's heartbeat"));
    let alarm = database_alarm(&address);
    assert!(
        alarm["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("this node cannot reach the hive's database (")),
        "{alarm}"
    );
    db.set_reachable(true);

    let text = outage_told(&hive, &address);
    assert!(
        text.starts_with("Node alpha could not use the hive's database for about ")
            && text.contains("it could not reach it (")
            && text.ends_with("may be asked again."),
        "{text}"
    );
    let read = hive.recv_operator(0);
    assert!(
        read.len() == 1 && read[0]["body"] == "stored before",
        "{read:?}"
    );
    assert!(hive.ok(&["status"]).contains("no agents yet"));
}

/// A database out of reach for less than a heartbeat interval fails
/// requests but no heartbeat; the dashboard shows the alarm from the first
/// failed request, and the operator is told of it all the same once the
/// next beat is stored.
#[test]
fn a_blip_between_two_heartbeats_is_told_to_the_operator() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let hive = alpha_beating_every(&db, "4");
    let address = alpha_node(&hive)["address"].as_str().unwrap().to_owned();
    // Right after a beat, so the blip is over well before the next one.
    let before = alphas_heartbeat(&hive);
    hive.wait_for("a heartbeat", 10, |h| alphas_heartbeat(h) != before);
    let beat = std::time::Instant::now();
    db.set_reachable(false);
    let out = hive.cli(&["status"]);
    // The failed request raises the dashboard's alarm at once, no beat failed.
    hive.wait_for("the alarm raised by the failed request", 2, |_| {
        !database_alarm(&address).is_null()
    });
    db.set_reachable(true);
    let blip = beat.elapsed();
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("cannot reach the hive's database"),
        "{out:?}"
    );

    let text = outage_told(&hive, &address);
    assert!(
        !hive.log().contains("could not store this node's heartbeat"),
        "a heartbeat failed too (the blip took {blip:?}), so this ran no blip between beats: {}",
        hive.log()
    );
    assert!(
        text.starts_with("Node alpha could not use the hive's database for ")
            && text.contains("it could not reach it (")
            && text.contains(" request")
            && text.ends_with("failed with an error and may be asked again."),
        "{text}"
    );
    assert!(hive.ok(&["status"]).contains("no agents yet"));
}

/// A session that holds a table's lock for good (a DBA's `LOCK TABLE` in
/// an open transaction, a `VACUUM FULL`): every caller waited behind it
/// for as long, the CLI until its own limit, and the operator was told
/// nothing. A statement now waits on a lock a bounded time, then fails as
/// the database out of reach: a sentence, and the alarm.
#[test]
fn a_lock_held_for_good_fails_requests_with_a_sentence_and_the_alarm() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let hive = alpha_beating_every_with(&db, "1", &[("HIVE_PG_LOCK_TIMEOUT_SECS", "2")]);
    let address = alpha_node(&hive)["address"].as_str().unwrap().to_owned();
    let held = db.lock("messages");
    let asked = std::time::Instant::now();
    let out = hive.cli(&["send", "operator", "behind the lock"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("a lock it needs was held for over 2 s"),
        "{err}"
    );
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        asked.elapsed()
    );
    hive.wait_for("the alarm", 10, |_| !database_alarm(&address).is_null());
    drop(held);
    hive.ok(&["send", "operator", "after the lock"]);
    hive.wait_for("the alarm off", 10, |_| database_alarm(&address).is_null());
}

/// The heartbeat keeps its time while what follows each beat (the other
/// nodes' liveness, the leases that ran out) waits on the database: it
/// waited in line behind them, and a node whose beats came late was
/// counted down by the others though it was alive.
#[test]
fn the_heartbeat_keeps_its_time_while_the_lease_sweep_waits_on_a_lock() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let hive = alpha_beating_every_with(&db, "1", &[("HIVE_PG_LOCK_TIMEOUT_SECS", "20")]);
    let held = db.lock("agent_leases");
    let beat = alphas_heartbeat(&hive);
    // The sweep after the next beat waits on the lock; beats go on.
    let mut beats = std::collections::HashSet::from([beat]);
    hive.wait_for("four more heartbeats while the sweep waits", 15, |h| {
        beats.insert(alphas_heartbeat(h));
        beats.len() >= 5
    });
    assert_eq!(alpha_node(&hive)["alive"], true);
    drop(held);
}

/// The database server's disk fills: PostgreSQL refuses every new row
/// (SQLSTATE 53100) while it still answers, so no heartbeat fails. It was a
/// plain "database error": no alarm, no webhook, and an agent whose writes
/// failed crashed, restarted, crashed, and ended `failed`. Now the alarm is
/// on from the first refused write until one goes through, the webhooks
/// that want `disk_full` hear of both, and an agent is told to wait.
#[test]
fn a_database_whose_disk_is_full_is_told_and_agents_wait() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let (recv, _dir, config) = common::webhook::slack_receiver(&["disk_full"]);
    let hive = alpha_beating_every_with(&db, "1", &[("HIVE_CONFIG", config.to_str().unwrap())]);
    hive.ok(&["spawn", "alice"]);
    let address = alpha_node(&hive)["address"].as_str().unwrap().to_owned();
    let alerts = || -> Vec<String> {
        recv.got
            .lock()
            .unwrap()
            .iter()
            .map(|g| g.body.clone())
            .collect()
    };

    db.sql(
        "CREATE FUNCTION hive_test_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         RAISE EXCEPTION 'could not extend file \"base/1/2\": No space left on device' USING ERRCODE = '53100'; \
         END $$; \
         CREATE TRIGGER hive_test_full BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION hive_test_full(); \
         CREATE TRIGGER hive_test_full BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION hive_test_full();",
    );
    let out = hive.cli(&["send", "operator", "while full"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("the hive's database has no room left on its disk"),
        "{err}"
    );
    let v = common::agent_call(
        &hive,
        "alice",
        serde_json::json!({"op": "send", "to": "operator", "body": "from alice"}),
    );
    assert_eq!(
        (v["ok"].as_bool(), v["unavailable"].as_bool()),
        (Some(false), Some(true)),
        "{v}"
    );
    hive.wait_for("the alert", 20, |_| {
        alerts()
            .iter()
            .any(|a| a.contains("no room left on its disk"))
    });
    // Heartbeats go on meanwhile (an update in place); the alarm stays on.
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    let alarm = database_alarm(&address);
    assert!(
        alarm["message"]
            .as_str()
            .is_some_and(|m| m.contains("no room left on its disk")),
        "{alarm}"
    );

    db.sql("DROP TRIGGER hive_test_full ON messages; DROP TRIGGER hive_test_full ON events;");
    hive.ok(&["send", "operator", "room again"]);
    hive.wait_for("the all-clear", 20, |_| {
        alerts()
            .iter()
            .any(|a| a.contains("room on its disk again"))
    });
    hive.wait_for("the alarm off", 10, |_| database_alarm(&address).is_null());
    assert!(hive.row("alice").unwrap()["failed"] == false);
}

/// A failover that leaves the node on a read-only standby: the server
/// answers, and refuses every write (SQLSTATE 25006). The heartbeat failed
/// and only logged: no alarm, no webhook, and nothing told after. Now the
/// alarm is on from the first failed beat, saying the server is read-only
/// and what to do, the webhooks that want `node_down` hear of it, and once
/// writes go through the operator finds a notification of how long it
/// lasted, with nothing stored before lost. Faked with a trigger that
/// raises 25006 on the heartbeat's table and on new messages.
#[test]
fn a_database_that_refuses_writes_raises_the_alarm_and_is_told_after() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let (recv, _dir, config) = common::webhook::slack_receiver(&["node_down"]);
    let hive = alpha_beating_every_with(&db, "1", &[("HIVE_CONFIG", config.to_str().unwrap())]);
    let address = alpha_node(&hive)["address"].as_str().unwrap().to_owned();
    hive.ok(&["send", "operator", "stored before"]);

    db.sql(
        "CREATE FUNCTION hive_test_read_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         RAISE EXCEPTION 'cannot execute % in a read-only transaction', TG_OP USING ERRCODE = '25006'; \
         END $$; \
         CREATE TRIGGER hive_test_read_only BEFORE UPDATE ON nodes FOR EACH ROW EXECUTE FUNCTION hive_test_read_only(); \
         CREATE TRIGGER hive_test_read_only BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION hive_test_read_only();",
    );
    hive.wait_for("the alarm", 10, |_| !database_alarm(&address).is_null());
    let alarm = database_alarm(&address);
    assert!(
        alarm["message"].as_str().is_some_and(|m| m.starts_with(
            "the hive's database refuses writes: the PostgreSQL server this node reaches is read-only, as a standby is ("
        ) && m.contains("(25006)")
            && m.ends_with("point this node's database URL at the primary")),
        "{alarm}"
    );
    hive.wait_for("the alert", 10, |_| {
        recv.got
            .lock()
            .unwrap()
            .iter()
            .any(|g| g.body.contains("refuses writes"))
    });
    let out = hive.cli(&["send", "operator", "while read-only"]);
    assert!(!out.status.success(), "{out:?}");

    db.sql(
        "DROP TRIGGER hive_test_read_only ON nodes; DROP TRIGGER hive_test_read_only ON messages;",
    );
    let text = outage_told(&hive, &address);
    assert!(
        text.starts_with("Node alpha could not use the hive's database for ")
            && text.contains("the hive's database refuses writes: the PostgreSQL server")
            && text.ends_with("may be asked again."),
        "{text}"
    );
    let read = hive.recv_operator(0);
    assert!(
        read.len() == 1 && read[0]["body"] == "stored before",
        "{read:?}"
    );
}

/// While the database is out of reach, so is the notifications' queue: the
/// webhooks that want `node_down` hear of it straight from the node (the json
/// one signed with the key read before), and of its end through the queue
/// once the database answers again.
#[test]
fn webhooks_hear_of_a_database_out_of_reach_while_it_lasts() {
    const KEY: &str = "outage-hmac-key-0123456789";
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let recv = Arc::new(Receiver::default());
    let addr = start_receiver(recv.clone());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hive.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[webhooks]]
name = "signed"
url = "http://{addr}/json"
format = "json"
secret = "WEBHOOK_KEY"
kinds = ["node_down"]

[[webhooks]]
name = "chat"
url = "http://{addr}/slack"
format = "slack"
kinds = ["node_down"]
"#
        ),
    )
    .unwrap();
    let mut opts = Opts::postgres(&db, "alpha");
    opts.env.extend([
        ("HIVE_HEARTBEAT_SECS".into(), "1".into()),
        ("HIVE_CONFIG".into(), config.display().to_string()),
    ]);
    let hive = started(TestHive::start_with(opts));
    let set =
        hive.request(serde_json::json!({"cmd": "secret_set", "name": "WEBHOOK_KEY", "value": KEY}));
    assert_eq!(set["ok"], true, "{set}");
    let got = || recv.got.lock().unwrap().clone();

    db.set_reachable(false);
    hive.wait_for("the alert at both webhooks", 20, |_| got().len() >= 2);
    let alerts = got();
    db.set_reachable(true);
    let json = alerts
        .iter()
        .find(|g| g.path == "/json")
        .expect("the json alert");
    let v: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    // Not stored: an id below 0, its own (a receiver that drops a repeated
    // id dropped every alert after the first when all had id 0).
    assert!(
        v["id"].as_i64().unwrap() < 0 && v["kind"] == "node_down",
        "{v}"
    );
    assert!(
        v["text"].as_str().unwrap().starts_with("Node alpha since ")
            && v["text"]
                .as_str()
                .unwrap()
                .contains("this node cannot reach the hive's database ("),
        "{v}"
    );
    assert!(json.signed_with(KEY), "{json:?}");
    let chat = alerts
        .iter()
        .find(|g| g.path == "/slack")
        .expect("the chat alert");
    assert!(chat.body.contains("cannot reach the hive"), "{}", chat.body);

    hive.wait_for("the stored notification at both webhooks", 30, |_| {
        got().len() >= 4
    });
    let after = got();
    let stored = after[2..]
        .iter()
        .find(|g| g.path == "/json")
        .expect("the queued json delivery");
    let v: serde_json::Value = serde_json::from_str(&stored.body).unwrap();
    assert!(
        v["id"].as_i64().unwrap() > 0
            && v["text"]
                .as_str()
                .unwrap()
                .starts_with("Node alpha could not use the hive's database for "),
        "{v}"
    );
    assert!(stored.signed_with(KEY));
}

/// The database out of reach in the middle of a real agent's turn: the
/// turn pauses (the harness sends its events again, the MCP server its
/// send) and goes on once the database is back; its message is answered
/// once, and the harness never ends.
#[test]
fn a_turn_the_database_went_away_under_is_answered_once_it_is_back() {
    let Some(db) = e2e_database() else {
        return;
    };
    let (_sim, hive) = alice_on(&db, &[("HIVE_HEARTBEAT_SECS", "1")], None);
    assert_eq!(ask_alice(&hive, "ping"), "pong");

    hive.ok(&["send", "alice", "slow"]);
    hive.wait_for("alice's model call", 30, |h| {
        h.row("alice").unwrap()["state"] == "thinking"
    });
    db.set_reachable(false);
    // Away until the turn has run into it (on a loaded machine the model's
    // answer may come after a fixed pause), and no longer than the lease lasts.
    hive.wait_for("the turn paused by the outage", 20, |h| {
        h.log()
            .contains("hive-c0re cannot reach its store; sending the request again every second")
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    db.set_reachable(true);

    let got = hive.recv_operator(90);
    let bodies: Vec<&str> = got.iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["done: slow"], "{}", hive.log());
    hive.wait_for("the harness through with the outage", 20, |h| {
        h.log().contains("hive-c0re reaches its store again")
    });
    let log = hive.log();
    assert!(
        !log.contains("harness exited")
            && log.contains(
                "hive-c0re cannot reach its store; sending the request again every second"
            ),
        "{log}"
    );
    hive.wait_for("alice idle with an empty inbox", 60, |h| {
        let r = h.row("alice").unwrap();
        r["state"] == "idle" && r["inbox_depth"] == 0
    });
    assert_eq!(ask_alice(&hive, "ping"), "pong");
}

/// The database dropped while a real turn's end is being stored, its
/// message acknowledged in the transaction and its figures waiting on a
/// lock: nothing of that end stays. The refused harness goes away, its turn
/// is ended `interrupted` once the database is back, and its message comes
/// again: the next turn answers it again and ends it, and only the turns
/// that ended count their spend. (Before, the acknowledgement was stored on
/// its own: the message was never answered again, the turn's spend lost.)
#[test]
fn a_turn_whose_end_the_database_dropped_has_its_message_come_again() {
    let Some(db) = e2e_database() else {
        return;
    };
    let (_sim, hive) = alice_on(&db, &[("HIVE_HEARTBEAT_SECS", "1")], None);
    assert_eq!(ask_alice(&hive, "ping"), "pong");
    let figures = |key: &str| {
        db.count(&format!(
            "SELECT count(*) FROM stats WHERE agent = 'alice' AND key = '{key}'"
        ))
    };
    assert_eq!(figures("tokens.in"), 1, "the model reports what it spends");

    let held = db.lock("stats");
    hive.ok(&["send", "alice", "ping"]);
    db.wait_for_lock_waiter("INSERT INTO stats");
    db.take_away_waiting_in("INSERT INTO stats");
    drop(held);
    hive.wait_for("the refused harness gone", 30, |h| {
        h.log().contains("harness exited")
    });
    db.set_reachable(true);

    let mut answers = vec![];
    hive.wait_for("the message answered again", 90, |h| {
        answers.extend(h.recv_operator(1));
        answers.len() >= 2
    });
    let bodies: Vec<&str> = answers
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["pong", "pong"], "{}", hive.log());
    hive.wait_for("alice idle with an empty inbox", 60, |h| {
        let r = h.row("alice").unwrap();
        r["state"] == "idle" && r["inbox_depth"] == 0 && turn_ends(h) == 3
    });
    let events = hive.events("alice");
    let ends: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "turn_end")
        .map(|e| e["payload"]["exit_class"].as_str().unwrap())
        .collect();
    assert_eq!(ends, ["ok", "interrupted", "ok"], "{}", hive.log());
    let started: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["kind"] == "turn_start")
        .map(|e| &e["payload"]["messages"])
        .collect();
    assert_eq!(started.len(), 3, "{started:?}");
    assert_eq!(started[1], started[2], "the same message, given again");
    assert_eq!(
        db.count(
            "SELECT count(*) FROM messages WHERE recipient = 'alice' AND delivered_at IS NOT NULL"
        ),
        2
    );
    // Three turns ended, two of them with the model's spend; the day's
    // spend is exactly what their figures say.
    assert_eq!(figures("turn.duration_ms"), 3, "{}", hive.log());
    assert_eq!(figures("tokens.in"), 2);
    assert_eq!(
        db.count(
            "SELECT ((SELECT tokens FROM spend_days WHERE agent = 'alice') - (SELECT sum(value) \
             FROM stats WHERE agent = 'alice' AND key IN ('tokens.in', 'tokens.out')))::bigint"
        ),
        0
    );
}

/// A relay that can lose the server's answers between a node and `db`, and
/// the database as reached through it.
fn relayed(db: &TestDatabase) -> (common::relay::LossyRelay, TestDatabase) {
    let port: u16 = db
        .url
        .split_once("@127.0.0.1:")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("the test database's port");
    let relay = common::relay::LossyRelay::start(port);
    let through = TestDatabase {
        name: db.name.clone(),
        url: db
            .url
            .replace(&format!(":{port}/"), &format!(":{}/", relay.port)),
        password: db.password.clone(),
    };
    (relay, through)
}

/// A send's body as its batch carries it to the server: a text array
/// element, its length first (an event quoting the body has no such prefix).
fn as_sent(body: &str) -> Vec<u8> {
    let mut element = (body.len() as u32).to_be_bytes().to_vec();
    element.extend_from_slice(body.as_bytes());
    element
}

/// alice's send commits, but its answer is lost with the connection, and the
/// database stays out of reach for every try hive-c0re makes, so alice hears
/// `unavailable` and sends again once it is back. The repeat carries the
/// first try's key and goes under its id: the operator gets one message.
#[test]
fn a_send_whose_commit_went_unanswered_is_stored_once_when_repeated() {
    let Some(db) = e2e_database() else {
        return;
    };
    let (relay, relayed) = relayed(&db);
    let (_sim, hive) = alice_on(&relayed, &[], None);
    assert_eq!(ask_alice(&hive, "ping"), "pong");

    relay.lose_answer_to(&as_sent("answer: probe"), std::time::Duration::from_secs(3));
    hive.ok(&["send", "alice", "probe"]);
    relay.wait_until_back(std::time::Duration::from_secs(60));
    assert!(
        hive.log()
            .contains("the database connection dropped during a send"),
        "{}",
        hive.log()
    );

    let mut got = hive.recv_operator(90);
    assert!(!got.is_empty(), "no answer: {}", hive.log());
    hive.wait_for("alice idle with an empty inbox", 60, |h| {
        let r = h.row("alice").unwrap();
        r["state"] == "idle" && r["inbox_depth"] == 0
    });
    got.extend(hive.recv_operator(1));
    let bodies: Vec<&str> = got.iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["answer: probe"], "{}", hive.log());
}

/// The operator's send commits, but its answer is lost with the connection
/// and the database stays out of reach for every try hive-c0re makes. The
/// CLI's error names the send's key; the same send repeated with `--key`
/// once the database is back goes under the first try's id: stored once.
#[test]
fn an_operators_send_repeated_with_its_key_is_stored_once() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let (relay, through) = relayed(&db);
    let hive = started(TestHive::start_with(Opts::postgres(&through, "alpha")));
    hive.ok(&["send", "operator", "warm-up"]);

    // Down longer than every try takes, however loaded the machine: under
    // load the tries outlasted 3 s, and one after the relay was back went in.
    relay.lose_answer_to(&as_sent("to myself"), std::time::Duration::from_secs(10));
    let first = hive.cli(&["send", "operator", "to myself"]);
    let said = String::from_utf8_lossy(&first.stderr).into_owned();
    assert!(!first.status.success(), "{said}\n{}", hive.log());
    assert!(relay.tripped(), "the relay never saw the send: {said}");
    let key = said
        .split_once("--key ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the error names no key: {said}"));
    relay.wait_until_back(std::time::Duration::from_secs(60));
    hive.ok(&["send", "--key", key, "operator", "to myself"]);

    let got = hive.recv_operator(10);
    let bodies: Vec<&str> = got.iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["warm-up", "to myself"], "{}", hive.log());
}
