//! The approval gate against a hostile manager, which writes the config repos:
//! what the operator reviews is what gets deployed, and nothing planted in a
//! repo directory makes hive-c0re write through a link or hang.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Opts, TestHive, git};

fn approval_id(out: &str) -> String {
    out.trim()
        .trim_start_matches("approval #")
        .trim_end_matches(" queued")
        .to_owned()
}

/// The path of a loose object in `repo` (objects are never packed in these tests).
fn object_file(repo: &Path, sha: &str) -> std::path::PathBuf {
    repo.join(".git/objects").join(&sha[..2]).join(&sha[2..])
}

#[test]
fn an_approval_deploys_the_text_the_operator_reviewed() {
    let hive = TestHive::start();
    hive.ok(&["spawn", "alice"]);
    let repo = hive.state_dir().join("configs/alice");
    let git = |args: &[&str]| git(&repo, args).trim().to_owned();
    let toml = std::fs::read_to_string(repo.join("agent.toml")).unwrap();

    // The change the operator is shown: a comment. The one the manager wants deployed: opus.
    std::fs::write(
        repo.join("agent.toml"),
        format!("{toml}# reviewed change\n"),
    )
    .unwrap();
    git(&["commit", "-qam", "reviewed"]);
    let reviewed = git(&["rev-parse", "HEAD"]);
    std::fs::write(
        repo.join("agent.toml"),
        toml.replace("model = \"haiku\"", "model = \"opus\""),
    )
    .unwrap();
    git(&["commit", "-qam", "evil"]);
    let evil = git(&["rev-parse", "HEAD"]);

    // Before the request: a replace ref makes the reviewed commit read as the evil one.
    git(&["replace", &reviewed, &evil]);
    let id = approval_id(&hive.ok(&["request-apply-commit", "alice", &reviewed]));
    // After the request: the reviewed blob's object file now holds the evil blob.
    let blob = |sha: &str| {
        git(&[
            "--no-replace-objects",
            "rev-parse",
            &format!("{sha}:agent.toml"),
        ])
    };
    let (good_blob, evil_blob) = (blob(&reviewed), blob(&evil));
    std::fs::remove_file(object_file(&repo, &good_blob)).unwrap();
    std::fs::copy(
        object_file(&repo, &evil_blob),
        object_file(&repo, &good_blob),
    )
    .unwrap();

    let shown = hive.ok(&["approvals", "show", &id]);
    assert!(shown.contains("+# reviewed change"), "{shown}");
    assert!(!shown.contains("opus"), "{shown}");
    hive.ok(&["approve", &id]);
    assert_eq!(hive.row("alice").unwrap()["active_model"], "haiku");

    // The deployed commit now reads as the evil one in the repo, so a diff taken
    // there would be empty; the operator must still see the model change.
    let id = approval_id(&hive.ok(&["request-apply-commit", "alice", &evil]));
    let shown = hive.ok(&["approvals", "show", &id]);
    assert!(
        shown.contains("-model = \"haiku\"") && shown.contains("+model = \"opus\""),
        "{shown}"
    );
    hive.ok(&["deny", &id]);
}

#[test]
fn a_planted_link_or_fifo_in_a_repo_dir_is_refused_and_stalls_nothing() {
    let mut opts = Opts::default();
    opts.env
        .push(("HIVE_BLOCKING_TIMEOUT_SECS".into(), "2".into()));
    let hive = TestHive::start_with(opts);
    let configs = hive.state_dir().join("configs");

    // A new repo dir whose agent.toml is a link to a host file.
    let target = hive.dir.path().join("host-file");
    std::fs::write(&target, "host file\n").unwrap();
    std::fs::create_dir_all(configs.join("dave")).unwrap();
    symlink(&target, configs.join("dave/agent.toml")).unwrap();
    // A new repo dir whose agent.toml is a FIFO nobody writes.
    std::fs::create_dir_all(configs.join("erin")).unwrap();
    nix::unistd::mkfifo(
        &configs.join("erin/agent.toml"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    for name in ["dave", "erin"] {
        for verb in ["init-config", "request-spawn"] {
            let err = refused_within(&hive, &[verb, name], Duration::from_secs(10));
            assert!(err.contains("not a config repo hive-c0re made"), "{err}");
        }
    }
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "host file\n");

    // A repo whose HEAD is a FIFO: git blocks on it. The request waits out the
    // time limit and fails with a sentence; host.sock answers meanwhile.
    hive.ok(&["init-config", "frank"]);
    let head = configs.join("frank/.git/HEAD");
    std::fs::remove_file(&head).unwrap();
    nix::unistd::mkfifo(&head, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let mut stuck = hive
        .command()
        .args(["request-spawn", "frank"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(stuck.try_wait().unwrap().is_none(), "git did not block");
    let asked = Instant::now();
    assert!(hive.raw(r#"{"cmd":"list"}"#).contains("\"ok\":true"));
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "host.sock waited {:?} behind the stuck request",
        asked.elapsed()
    );
    let out = wait_output(stuck, Duration::from_secs(20));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("did not finish within 2s"), "{err}");
}

/// Runs a CLI verb that must be refused within `limit`; returns its stderr.
fn refused_within(hive: &TestHive, args: &[&str], limit: Duration) -> String {
    let child = hive
        .command()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, limit);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    err
}

/// Waits for a child, killing it (and failing) after `limit`.
fn wait_output(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the request hung for {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_config_repo_ahead_of_the_deployed_commit_needs_an_update_until_approved() {
    let mut opts = Opts::default();
    opts.env
        .push(("HIVE_CONFIG_POLL_SECS".into(), "0.2".into()));
    let hive = TestHive::start_with(opts);
    hive.ok(&["spawn", "alice"]);
    let repo = hive.state_dir().join("configs/alice");
    let git = |args: &[&str]| git(&repo, args).trim().to_owned();
    let needs_update = |h: &TestHive| h.row("alice").unwrap()["needs_update"] == true;
    // Long enough for several polls: the freshly made repo is what is deployed.
    std::thread::sleep(Duration::from_secs(1));
    assert!(!needs_update(&hive), "{:?}", hive.row("alice"));

    let toml = std::fs::read_to_string(repo.join("agent.toml")).unwrap();
    std::fs::write(repo.join("agent.toml"), format!("{toml}# a change\n")).unwrap();
    git(&["commit", "-qam", "a change"]);
    hive.wait_for("needs_update after a commit", 20, needs_update);

    let head = git(&["rev-parse", "HEAD"]);
    let id = approval_id(&hive.ok(&["request-apply-commit", "alice", &head]));
    assert!(needs_update(&hive), "a request alone deploys nothing");
    hive.ok(&["approve", &id]);
    assert!(
        !needs_update(&hive),
        "the approved head is the deployed one"
    );
}
