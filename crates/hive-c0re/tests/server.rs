//! Running a hive on a server: the config file, the systemd unit and readiness
//! protocol, the NixOS module, and `doctor`, each through the real binaries
//! and tools (systemd-analyze, nix-instantiate) where this machine has them.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Opts, TestHive};

fn unit_path() -> PathBuf {
    common::repo_root().join("contrib/systemd/hyperhive.service")
}

/// The unit file as sections of keys; a key given twice keeps every value.
fn parse_unit(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_owned();
        } else {
            let (k, v) = line.split_once('=').expect("key=value");
            out.entry(section.clone())
                .or_default()
                .entry(k.to_owned())
                .or_default()
                .push(v.to_owned());
        }
    }
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// ---- the config file ----

/// `hive-c0re serve --print-config` with this config file, environment and flags.
fn print_config(file: &Path, env: &[(&str, &str)], flags: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hive-c0re"));
    c.args(["serve", "--print-config", "--config"])
        .arg(file)
        .args(flags);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn print_config_shows_flags_over_environment_over_file_over_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hive.toml");
    std::fs::write(&file, "inbox_cap = 2\nevents_keep = 3\nhistory_days = 4\n").unwrap();
    let env = [("HIVE_EVENTS_KEEP", "30"), ("HIVE_HISTORY_DAYS", "40")];
    let out = print_config(&file, &env, &["--history-days", "400"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} in\n{text}"))
            .to_owned()
    };
    assert!(
        line("inbox_cap").contains("= 2") && line("inbox_cap").contains("# file:"),
        "{text}"
    );
    assert!(
        line("events_keep").contains("= 30")
            && line("events_keep").contains("# env HIVE_EVENTS_KEEP:"),
        "{text}"
    );
    assert!(
        line("history_days").contains("= 400") && line("history_days").contains("# flag:"),
        "{text}"
    );
    assert!(
        line("delivered_keep").contains("= 5000") && line("delivered_keep").contains("# default:"),
        "{text}"
    );
    assert!(
        text.contains(&format!("# config file: {}", file.display())),
        "{text}"
    );
    // What it prints is itself a config file that gives the same settings.
    let again = dir.path().join("again.toml");
    std::fs::write(&again, &text).unwrap();
    let out = print_config(&again, &[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("history_days = 400"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn an_unknown_key_or_a_bad_value_stops_serve_naming_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hive.toml");
    for (toml, want) in [
        ("inbox_capp = 1\n", "unknown key `inbox_capp`"),
        ("inbox_cap = \"many\"\n", "key `inbox_cap`"),
    ] {
        std::fs::write(&file, toml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_hive-c0re"))
            .arg("serve")
            .arg("--config")
            .arg(&file)
            .env("HIVE_STATE_DIR", dir.path().join("state"))
            .env("HIVE_RUN_DIR", dir.path().join("run"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{toml}");
        let err = stderr(&out);
        assert!(
            err.contains(want) && err.contains(&file.display().to_string()),
            "{err}"
        );
        assert!(!dir.path().join("state").exists(), "serve went on: {err}");
    }
}

#[test]
fn serve_runs_with_the_file_settings() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hive.toml");
    std::fs::write(&file, "inbox_cap = 2\nno_manager = true\n").unwrap();
    let hive = TestHive::start_with(Opts {
        args: vec![
            "--no-dashboard".into(),
            "--config".into(),
            file.display().to_string(),
        ],
        ..Opts::default()
    });
    assert!(hive.row("manager").is_none(), "no_manager from the file");
    hive.ok(&["spawn", "alice"]);
    hive.ok(&["pause", "alice"]);
    hive.ok(&["send", "alice", "one"]);
    hive.ok(&["send", "alice", "two"]);
    let third = hive.cli(&["send", "alice", "three"]);
    assert_eq!(third.status.code(), Some(1), "{}", stdout(&third));
    assert!(
        stderr(&third).contains("inbox holds 2 undelivered messages"),
        "{}",
        stderr(&third)
    );
}

// ---- systemd ----

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = common::which("systemd-analyze") else {
        eprintln!("skipped: no systemd-analyze (scripts/deps.sh installs systemd)");
        return;
    };
    // verify checks that ExecStart exists and that the units it pulls in do: an
    // alternate root with this system's units, the unit, and hive-c0re at its path.
    let root = tempfile::tempdir().unwrap();
    let units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .find(|d| Path::new(d).join("multi-user.target").exists())
        .expect("systemd's units");
    std::fs::create_dir_all(root.path().join("usr/lib/systemd")).unwrap();
    let cp = Command::new("cp")
        .args(["-a", units])
        .arg(root.path().join("usr/lib/systemd/system"))
        .status()
        .unwrap();
    assert!(cp.success());
    let text = std::fs::read_to_string(unit_path()).unwrap();
    let exec = parse_unit(&text)["Service"]["ExecStart"][0].clone();
    let bin = exec
        .split_whitespace()
        .next()
        .unwrap()
        .trim_start_matches('/');
    std::fs::create_dir_all(root.path().join(bin).parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_hive-c0re"), root.path().join(bin)).unwrap();
    std::fs::create_dir_all(root.path().join("etc/systemd/system")).unwrap();
    std::fs::write(
        root.path().join("etc/systemd/system/hyperhive.service"),
        &text,
    )
    .unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .args(["--man=no", "hyperhive.service"])
        .output()
        .unwrap();
    // verify only warns about unknown keys: any output is a failure.
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify ({}):\n{}{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    let service = &parse_unit(&text)["Service"];
    for (k, v) in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("KillMode", "mixed"),
    ] {
        assert_eq!(service[k], [v], "{k}");
    }
    assert!(service.contains_key("WatchdogSec"));
}

/// A daemon under test that is killed with the test.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_tells_systemd_when_it_serves_pings_the_watchdog_and_says_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify");
    let rx = UnixDatagram::bind(&notify).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let sock = dir.path().join("run/host.sock");
    let mut daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_hive-c0re"))
            .args([
                "serve",
                "--runtime",
                "process",
                "--no-manager",
                "--no-dashboard",
            ])
            .env("HIVE_CONFIG", "/dev/null")
            .env("HIVE_STATE_DIR", dir.path().join("state"))
            .env("HIVE_RUN_DIR", dir.path().join("run"))
            .env("NOTIFY_SOCKET", &notify)
            .env("WATCHDOG_USEC", "200000")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut buf = [0u8; 512];
    let mut recv = || {
        let n = rx.recv(&mut buf).expect("a notification within 30 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = recv();
    assert!(first.lines().any(|l| l == "READY=1"), "{first:?}");
    // Ready means serving: host.sock answers at once.
    let status = Command::new(env!("CARGO_BIN_EXE_hive-c0re"))
        .arg("status")
        .env("HIVE_RUN_DIR", dir.path().join("run"))
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{} {}",
        sock.display(),
        stderr(&status)
    );
    // WATCHDOG_USEC=200000: a ping every 100 ms.
    let start = Instant::now();
    let pings = (0..5).filter(|_| recv() == "WATCHDOG=1").count();
    assert_eq!(pings, 5);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let stopping = std::iter::repeat_with(recv)
        .take(20)
        .find(|m| m != "WATCHDOG=1")
        .expect("a message other than WATCHDOG=1");
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert!(daemon.0.wait().unwrap().success());
}

#[test]
fn a_stop_right_after_ready_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify");
    let rx = UnixDatagram::bind(&notify).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_hive-c0re"))
            .args([
                "serve",
                "--runtime",
                "process",
                "--no-manager",
                "--no-dashboard",
            ])
            .env("HIVE_CONFIG", "/dev/null")
            .env("HIVE_STATE_DIR", dir.path().join("state"))
            .env("HIVE_RUN_DIR", dir.path().join("run"))
            .env("NOTIFY_SOCKET", &notify)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut buf = [0u8; 512];
    let n = rx.recv(&mut buf).expect("READY=1 within 30 s");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = daemon.0.wait().unwrap();
    assert!(
        st.success(),
        "a SIGTERM right after READY=1 killed serve: {st}"
    );
    assert!(
        !dir.path().join("run/host.sock").exists(),
        "host.sock left behind"
    );
}

// ---- NixOS ----

/// nix-instantiate with no store writes and no build users.
fn nix_instantiate(args: &[&str]) -> Output {
    Command::new("nix-instantiate")
        .args(["--readonly-mode", "--option", "build-users-group", ""])
        .args(args)
        .current_dir(common::repo_root())
        .output()
        .unwrap()
}

fn nix_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            if !name.starts_with('.') && !["target", "node_modules"].contains(&name.as_str()) {
                nix_files(&p, out);
            }
        } else if name.ends_with(".nix") {
            out.push(p);
        }
    }
}

#[test]
fn every_nix_file_parses_and_the_module_makes_the_shipped_unit() {
    if common::which("nix-instantiate").is_none() {
        eprintln!("skipped: no nix-instantiate (scripts/deps.sh installs nix-bin)");
        return;
    }
    let mut files = vec![];
    nix_files(&common::repo_root(), &mut files);
    let names: Vec<String> = files
        .iter()
        .map(|f| {
            f.strip_prefix(common::repo_root())
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    for want in ["flake.nix", "nix/module.nix", "nix/package.nix"] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    for f in &files {
        let out = nix_instantiate(&["--parse", f.to_str().unwrap()]);
        assert!(out.status.success(), "{}: {}", f.display(), stderr(&out));
    }

    let out = nix_instantiate(&["--eval", "--strict", "--json", "nix/tests/eval-module.nix"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["enabled"], true);
    assert_eq!(got["disabledByDefault"], true);
    assert!(
        got["assertions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["assertion"] == true)
    );

    // The service is the unit's, [Service] key by key; only ExecStart's directory differs.
    let unit = parse_unit(&std::fs::read_to_string(unit_path()).unwrap());
    let svc = &got["service"];
    let service_config = svc["serviceConfig"].as_object().unwrap();
    let mut want = unit["Service"].clone();
    want.insert(
        "ExecStart".into(),
        vec![want["ExecStart"][0].replace("/usr/local/bin/", "/nix/store/stub-hyperhive/bin/")],
    );
    let have: BTreeMap<String, Vec<String>> = service_config
        .iter()
        .map(|(k, v)| {
            let values = match v {
                serde_json::Value::Array(a) => {
                    a.iter().map(|x| x.as_str().unwrap().to_owned()).collect()
                }
                other => vec![other.as_str().unwrap().to_owned()],
            };
            (k.clone(), values)
        })
        .collect();
    assert_eq!(have, want);
    let words = |s: &str, k: &str| {
        unit[s][k][0]
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let list = |k: &str| -> Vec<String> {
        svc[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(svc["description"], unit["Unit"]["Description"][0].as_str());
    assert_eq!(list("after"), words("Unit", "After"));
    assert_eq!(list("wants"), words("Unit", "Wants"));
    assert_eq!(list("wantedBy"), words("Install", "WantedBy"));
    assert_eq!(svc["unitConfig"], serde_json::json!({}));
    // What NixOS adds: the tools serve runs, the settings as /etc/hyperhive/hive.toml, the admin group.
    for tool in [
        "stub-systemd",
        "stub-util-linux",
        "stub-git",
        "stub-claude-code",
    ] {
        assert!(
            list("path").iter().any(|p| p.ends_with(tool)),
            "{tool} not on PATH"
        );
    }
    let etc = &got["environment"]["etc"]["hyperhive/hive.toml"]["source"];
    assert_eq!(
        etc["value"],
        serde_json::json!({"runtime": "nspawn", "inbox_cap": 500})
    );
    assert_eq!(svc["restartTriggers"][0], *etc);
    assert!(got["users"]["groups"].get("hive-admin").is_some());
}

// ---- doctor ----

fn doctor(hive: &TestHive, env: &[(&str, String)], flags: &[&str]) -> (Option<i32>, String) {
    let mut c = hive.command();
    c.arg("doctor").args(flags);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (out.status.code(), stdout(&out))
}

#[test]
fn doctor_says_all_is_well_or_names_each_problem_with_its_fix() {
    let Some(claude) = common::claude_bin() else {
        eprintln!("skipped: no claude CLI (run scripts/deps.sh or set HIVE_CLAUDE_BIN)");
        return;
    };
    let hive = TestHive::start();
    let endpoint = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let good = [
        ("HIVE_CLAUDE_BIN", claude.display().to_string()),
        ("ANTHROPIC_API_KEY", "sk-test".to_owned()),
        (
            "ANTHROPIC_BASE_URL",
            format!("http://{}", endpoint.local_addr().unwrap()),
        ),
    ];
    let (code, out) = doctor(
        &hive,
        &good,
        &["--runtime", "process", "--dashboard", "127.0.0.1:0"],
    );
    for want in [
        "ok: claude ",
        "ok: credentials: ANTHROPIC_API_KEY",
        "ok: model endpoint",
        "ok: state dir",
        "ok: dashboard on 127.0.0.1:0",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(want)),
            "no {want:?} in\n{out}"
        );
    }
    assert_eq!(code, Some(0), "{out}");
    assert!(out.ends_with("all is well\n"), "{out}");

    // Now break what the operator controls.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    std::fs::set_permissions(hive.state_dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let bad = [
        ("HIVE_CLAUDE_BIN", "/nonexistent/claude".to_owned()),
        ("ANTHROPIC_BASE_URL", closed_url),
    ];
    let (code, out) = doctor(
        &hive,
        &bad,
        &["--runtime", "process", "--dashboard", "0.0.0.0:0"],
    );
    std::fs::set_permissions(hive.state_dir(), std::fs::Permissions::from_mode(0o711)).unwrap();
    assert_eq!(code, Some(1), "{out}");
    for want in [
        "problem: /nonexistent/claude --version failed",
        "problem: no model credentials",
        "problem: the model endpoint http://127.0.0.1:",
        "has mode 0777, open to other users: chmod 0711",
        "problem: the dashboard listens on 0.0.0.0:0, beyond this host, without a fixed token",
    ] {
        assert!(
            out.lines().any(|l| l.contains(want)),
            "no {want:?} in\n{out}"
        );
    }
    assert!(out.ends_with("5 problems found\n"), "{out}");
}
