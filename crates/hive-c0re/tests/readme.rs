//! Every command in README.md runs as written on a demo hive: the test reads
//! the README's `sh` blocks and runs each command line, in order, with `sh`
//! against a hive like the one `scripts/demo.sh` starts (process runtime, the
//! scripted model, alice and bob), failing on a non-zero exit.
//!
//! Skipped, exactly: the first block (the two set-up commands, which CI runs
//! itself), blocks fenced as `sh example`, and lines whose comment says
//! `# example`. A line with a `<placeholder>` must say `# example`.

mod common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ModelSim, Opts, TestHive, bin_dir, repo_root};

/// One command line of the README: its block's first line number, and the line.
struct Line {
    at: usize,
    text: String,
}

/// The runnable command lines of `readme`, in order; the set-up block's lines apart.
fn commands(readme: &str) -> (Vec<String>, Vec<Line>) {
    let mut setup = Vec::new();
    let mut out = Vec::new();
    let mut block: Option<(String, usize)> = None;
    let mut sh_blocks = 0;
    for (i, line) in readme.lines().enumerate() {
        let at = i + 1;
        if let Some(info) = line.strip_prefix("```") {
            block = match block {
                None => {
                    if info.trim() == "sh" {
                        sh_blocks += 1;
                    }
                    Some((info.trim().to_owned(), sh_blocks))
                }
                Some(_) => None,
            };
            continue;
        }
        let Some((info, n)) = &block else { continue };
        let text = line.trim();
        if info != "sh" || text.is_empty() || text.starts_with('#') {
            continue;
        }
        if *n == 1 {
            setup.push(text.to_owned());
            continue;
        }
        let example = text
            .split_once(" #")
            .is_some_and(|(_, c)| c.trim_start().starts_with("example"));
        let placeholder = regex_lite_placeholder(text);
        assert!(
            example || !placeholder,
            "README.md:{at}: {text:?} has a <placeholder> but is not marked `# example`"
        );
        if !example {
            out.push(Line {
                at,
                text: text.to_owned(),
            });
        }
    }
    (setup, out)
}

/// True when `text` holds `<word>` (a placeholder to fill in, e.g. `<id>`).
fn regex_lite_placeholder(text: &str) -> bool {
    text.split('<').skip(1).any(|rest| {
        rest.split_once('>').is_some_and(|(w, _)| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '-' || c == '_')
        })
    })
}

#[test]
fn the_readme_marks_its_examples_and_its_set_up_commands() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let (setup, lines) = commands(&readme);
    let setup: Vec<&str> = setup
        .iter()
        .map(|l| l.split(" #").next().unwrap().trim())
        .collect();
    assert_eq!(setup, ["sudo ./scripts/demo.sh", "sudo ./scripts/test.sh"]);
    assert!(
        lines
            .iter()
            .any(|l| l.text.starts_with("hive-c0re config commit dave"))
    );
    assert!(!lines.iter().any(|l| l.text.contains("<id>")));
    assert!(regex_lite_placeholder("hive-c0re approve <id>"));
    assert!(!regex_lite_placeholder("a -> b < c.toml"));
}

#[test]
fn every_readme_command_runs_as_written_on_a_demo_hive() {
    if !common::e2e_ready() {
        return;
    }
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let (_, lines) = commands(&readme);
    // The demo's hive: the scripted model, the process runtime, alice and bob, a dashboard.
    let sim = ModelSim::start(None);
    let mut opts = Opts {
        runtime: "process",
        args: vec![
            "--no-manager".into(),
            "--dashboard".into(),
            "127.0.0.1:0".into(),
        ],
        ..Opts::default()
    };
    opts.env = sim.env();
    let hive = TestHive::start_with(opts);
    hive.ok(&["spawn", "alice"]);
    hive.ok(&["spawn", "bob"]);
    // The operator's working directory (`dave.toml` lands there) and their token.
    let work = tempfile::tempdir().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let mut failed = Vec::new();
    for line in &lines {
        // As an operator reads what came back before typing on: no agent is
        // mid-turn (a loaded machine makes turns slow; `compact` wants idle).
        hive.wait_for("every agent to be idle", 120, |h| {
            h.ok(&["status", "--json"]).lines().all(|l| {
                let row: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
                row.get("name").is_none()
                    || row["running"] != true
                    || matches!(row["state"].as_str(), Some("idle" | "napping"))
            })
        });
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&line.text)
            .current_dir(work.path())
            .env("PATH", &path)
            .env("GH_TOKEN", "ghp_readme_test_token_0123456789")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a time limit ends the command, not only sh.
            .process_group(0);
        let base = hive.command();
        for (k, v) in base.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        // A command that follows (`--follow`) runs until Ctrl-C: a few seconds without failing is its success.
        let follows = line.text.contains("--follow");
        let limit = if follows {
            Duration::from_secs(3)
        } else {
            Duration::from_secs(90)
        };
        let started = Instant::now();
        let mut child = cmd.spawn().unwrap();
        let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            if started.elapsed() > limit {
                let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (stdout, stderr) = (reader.join().unwrap(), err_reader.join().unwrap());
        let ok = match status {
            Some(st) => st.success(),
            None => follows,
        };
        eprintln!(
            "README.md:{}: {} ({:?}, {:.1}s)",
            line.at,
            line.text,
            status.map(|s| s.code()),
            started.elapsed().as_secs_f64()
        );
        if !ok {
            failed.push(format!(
                "README.md:{}: {}\n  exit: {:?}\n  stdout: {}\n  stderr: {}",
                line.at,
                line.text,
                status.map(|s| s.code()),
                stdout.trim(),
                stderr.trim()
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "README commands that do not run as written:\n{}\n\nhive log:\n{}",
        failed.join("\n"),
        hive.log()
    );
}
