//! The operator's edit of a config repo, as the README gives it: `config
//! show`, edit, `config commit`, request, approve. The repo belongs to the
//! agent's uid (as under nspawn, where it is the container's), so git run by
//! root refuses it ("dubious ownership"), and an agent can plant hooks and
//! config in it that must not run as root.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::{TestHive, write_exe};

/// Runs a CLI verb with `input` on stdin; (exit code, stdout, stderr).
fn cli_with_input(hive: &TestHive, args: &[&str], input: &str) -> (i32, String, String) {
    let out = hive
        .spawn_with_input(args, input)
        .wait_with_output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Hands `repo` to `uid` (every file in it), as a container's repo is.
fn chown_tree(repo: &Path, uid: u32) {
    let st = Command::new("chown")
        .args(["-R", &format!("{uid}:{uid}")])
        .arg(repo)
        .status()
        .unwrap();
    assert!(st.success());
}

/// A hive with alice, whose config repo belongs to alice's own uid, not root.
fn hive_with_agent_owned_repo() -> Option<(TestHive, std::path::PathBuf, u32)> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the repo must belong to another uid than the operator's (run as root)");
        return None;
    }
    let hive = TestHive::start();
    hive.ok(&["spawn", "alice"]);
    let repo = hive.state_dir().join("configs/alice");
    // Alice's uid: her state dir is hers (the process runtime under root).
    let uid = std::fs::metadata(hive.state_dir().join("agents/alice/state"))
        .or_else(|_| std::fs::metadata(hive.state_dir().join("agents/alice")))
        .unwrap()
        .uid();
    let uid = if uid == 0 {
        4_242_000 + std::process::id() % 1000
    } else {
        uid
    };
    chown_tree(&repo, uid);
    Some((hive, repo, uid))
}

#[test]
fn the_readme_flow_edits_an_agent_owned_repo_as_root_and_goes_through_approval() {
    let Some((hive, repo, uid)) = hive_with_agent_owned_repo() else {
        return;
    };
    // What the README warns of: plain git as root refuses the agent's repo.
    let plain = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["-c", "user.name=op", "-c", "user.email=op@localhost"])
        .args(["commit", "--allow-empty", "-qm", "by hand"])
        .output()
        .unwrap();
    assert!(!plain.status.success());
    assert!(
        String::from_utf8_lossy(&plain.stderr).contains("dubious ownership"),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );

    // The README's flow.
    let shown = hive.ok(&["config", "show", "alice"]);
    assert!(shown.contains("model = \"haiku\""), "{shown}");
    let edited = shown.replace("model = \"haiku\"", "model = \"sonnet\"");
    let (code, sha, err) = cli_with_input(
        &hive,
        &["config", "commit", "alice", "-m", "alice on sonnet"],
        &edited,
    );
    assert_eq!(code, 0, "{err}");
    let sha = sha.trim().to_owned();
    assert_eq!(sha.len(), 40, "{sha}");
    assert!(
        err.contains(&format!("request-apply-commit alice {sha}")),
        "{err}"
    );
    // The repo's head, and what it wrote, stay the agent's.
    assert_eq!(hive.ok(&["config", "show", "alice"]), edited);
    let object = repo.join(".git/objects").join(&sha[..2]).join(&sha[2..]);
    assert_eq!(
        std::fs::metadata(&object).unwrap().uid(),
        uid,
        "the commit object is the repo owner's"
    );
    let log = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["-c", &format!("safe.directory={}", repo.display())])
        .args(["log", "-1", "--format=%H %s"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&log.stdout).trim(),
        format!("{sha} alice on sonnet")
    );

    // Nothing is deployed until approved.
    assert_eq!(hive.row("alice").unwrap()["active_model"], "haiku");
    let queued = hive.ok(&["request-apply-commit", "alice", &sha]);
    let id = queued
        .trim()
        .trim_start_matches("approval #")
        .trim_end_matches(" queued")
        .to_owned();
    let diff = hive.ok(&["approvals", "show", &id]);
    assert!(
        diff.contains("-model = \"haiku\"") && diff.contains("+model = \"sonnet\""),
        "{diff}"
    );
    hive.ok(&["approve", &id]);
    assert_eq!(hive.row("alice").unwrap()["active_model"], "sonnet");

    // An edit that is not a valid config commits nothing.
    let (code, _, err) = cli_with_input(&hive, &["config", "commit", "alice"], "model = [\n");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("not a valid config, nothing was committed"),
        "{err}"
    );
    assert_eq!(hive.ok(&["config", "show", "alice"]), edited);
}

#[test]
fn hooks_and_config_an_agent_plants_in_its_repo_do_not_run_during_the_operators_edit() {
    let Some((hive, repo, uid)) = hive_with_agent_owned_repo() else {
        return;
    };
    // Ways a repo can make git run a program on a commit: hooks in .git/hooks
    // (reachable through the repo itself, by any uid), an fsmonitor, and a
    // clean filter the work tree's .gitattributes names.
    let marks = hive.dir.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    std::fs::set_permissions(&marks, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let hook = |name: &str| {
        format!(
            "#!/bin/sh\necho \"{name} ran as $(id -u)\" > {}/{name}\ncat >/dev/null 2>&1 || true\nexit 0\n",
            marks.display()
        )
    };
    let hooks = repo.join(".git/hooks");
    for name in [
        "pre-commit",
        "commit-msg",
        "post-commit",
        "reference-transaction",
        "post-rewrite",
    ] {
        write_exe(&hooks.join(name), &hook(name));
    }
    write_exe(&repo.join("fsmonitor"), &hook("fsmonitor"));
    write_exe(&repo.join("clean"), &hook("clean-filter"));
    std::fs::write(repo.join(".gitattributes"), "agent.toml filter=evil\n").unwrap();
    let config = repo.join(".git/config");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "[core]\n\tfsmonitor = {}\n[filter \"evil\"]\n\tclean = {}\n",
        repo.join("fsmonitor").display(),
        repo.join("clean").display()
    ));
    std::fs::write(&config, text).unwrap();
    chown_tree(&repo, uid);

    // The planted programs are live: git as root, told the repo is safe, runs them.
    let naive = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["-c", &format!("safe.directory={}", repo.display())])
        .args(["-c", "user.name=op", "-c", "user.email=op@localhost"])
        .args(["commit", "--allow-empty", "-qm", "naive"])
        .output()
        .unwrap();
    assert!(
        naive.status.success(),
        "{}",
        String::from_utf8_lossy(&naive.stderr)
    );
    let ran = |m: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(m)
            .unwrap()
            .map(|e| {
                std::fs::read_to_string(e.unwrap().path())
                    .unwrap()
                    .trim()
                    .to_owned()
            })
            .collect();
        v.sort();
        v
    };
    assert!(
        ran(&marks).iter().any(|l| l.ends_with("ran as 0")),
        "the planted hooks run under plain git as root: {:?}",
        ran(&marks)
    );
    for e in std::fs::read_dir(&marks).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    // Root's commit left an object directory root owns; the hive's git runs
    // as the agent and could not add an object there (about one run in a
    // hundred, by the hashes). Hand the repo back, as nothing in the hive
    // writes there as root.
    chown_tree(&repo, uid);

    // The README's flow runs none of them, as root or as anyone.
    let shown = hive.ok(&["config", "show", "alice"]);
    let (code, sha, err) = cli_with_input(
        &hive,
        &["config", "commit", "alice", "-m", "operator edit"],
        &format!("{shown}# edited by the operator\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        ran(&marks),
        Vec::<String>::new(),
        "nothing the agent planted ran"
    );
    // And the commit holds exactly the text given (no clean filter touched it).
    assert_eq!(
        hive.ok(&["config", "show", "alice"]),
        format!("{shown}# edited by the operator\n")
    );
    let id = hive.ok(&["request-apply-commit", "alice", sha.trim()]);
    assert!(id.starts_with("approval #"), "{id}");
    assert_eq!(
        ran(&marks),
        Vec::<String>::new(),
        "nothing ran on the request either"
    );
}

/// A directory holding a `git` (the script `script(dir, real git)` makes)
/// that anyone may run, and a PATH with it first, for serve to find.
fn git_first_on_path(script: impl Fn(&Path, &Path) -> String) -> (tempfile::TempDir, String) {
    let fake = tempfile::Builder::new()
        .prefix("hive-git-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(fake.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let real = common::which("git").expect("git");
    let git = fake.path().join("git");
    write_exe(&git, &script(fake.path(), &real));
    std::fs::set_permissions(&git, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap()
    );
    (fake, path)
}

/// The operator's `config commit` runs git as the repo's owner (the agent's
/// uid), which can read that process's environ in /proc: git used to get
/// the daemon's whole environment, the database password and the
/// dashboard's token with it. A `git` first on serve's PATH writes down the
/// environment it was given, then runs the real one.
#[test]
fn git_run_as_an_agents_uid_gets_none_of_the_daemons_environment() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: git runs as another uid only when hive-c0re runs as root");
        return;
    }
    let (fake, path) = git_first_on_path(|dir, real| {
        format!(
            "#!/bin/sh\n{{ echo '--- git'; env; }} >> {}\nexec {} \"$@\"\n",
            dir.join("env.dump").display(),
            real.display()
        )
    });
    let dump = fake.path().join("env.dump");
    let hive = TestHive::start_with(common::Opts {
        env: vec![
            ("PATH".into(), path),
            ("PGPASSWORD".into(), "pg-password-marker".into()),
            (
                "HIVE_DASHBOARD_TOKEN".into(),
                "dashboard-token-marker".into(),
            ),
        ],
        ..common::Opts::default()
    });
    hive.ok(&["spawn", "alice"]);
    let repo = hive.state_dir().join("configs/alice");
    chown_tree(&repo, 4_243_000 + std::process::id() % 1000);
    let shown = hive.ok(&["config", "show", "alice"]);
    let (code, _, err) = cli_with_input(
        &hive,
        &["config", "commit", "alice", "-m", "operator edit"],
        &format!("{shown}\n# an edit\n"),
    );
    assert_eq!(code, 0, "{err}");
    let seen = std::fs::read_to_string(&dump).expect("serve ran git from its PATH");
    assert!(seen.contains("--- git"), "{seen}");
    assert!(
        !seen.contains("pg-password-marker") && !seen.contains("dashboard-token-marker"),
        "git got the daemon's secrets:\n{seen}"
    );
}

/// git 2.54 and later run the hooks any config file names
/// (`hook.<name>.command` for `hook.<name>.event`), the repo's own
/// `.git/config` included, and `core.hooksPath` does not switch them off.
/// The manager writes that file, so a hook there ran on the operator's
/// `config commit`, as the manager's uid but on the host, outside its
/// container (git's `update-ref` runs the reference-transaction hook). This
/// host's git is older: a `git` first on serve's PATH does what 2.54 does
/// for the commands that run that hook, then runs the real one.
#[test]
fn a_hook_named_in_the_repos_config_does_not_run_on_the_operators_commit() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the repo must belong to another uid than the operator's (run as root)");
        return;
    }
    let (fake, path) = git_first_on_path(|_, real| {
        format!(
            r#"#!/bin/sh
skip=
for a in "$@"; do
  if [ -n "$skip" ]; then skip=; continue; fi
  case "$a" in
    -c) skip=1; continue ;;
    -*) continue ;;
    update-ref|commit|merge|rebase|am|checkout|switch|reset|push)
      {real} config --get-regexp '^hook\..*\.command$' | while read -r key cmd; do sh -c "$cmd"; done ;;
  esac
  break
done
exec {real} "$@"
"#,
            real = real.display()
        )
    });
    let hive = TestHive::start_with(common::Opts {
        env: vec![("PATH".into(), path)],
        ..common::Opts::default()
    });
    hive.ok(&["spawn", "alice"]);
    let repo = hive.state_dir().join("configs/alice");
    let uid = 4_244_000 + std::process::id() % 1000;
    let marks = hive.dir.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    std::fs::set_permissions(&marks, std::fs::Permissions::from_mode(0o1777)).unwrap();
    // What the manager writes into the repo's config.
    let config = repo.join(".git/config");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "[hook \"x\"]\n\tevent = reference-transaction\n\tcommand = id -u > {}/hook\n",
        marks.display()
    ));
    std::fs::write(&config, text).unwrap();
    chown_tree(&repo, uid);
    // The stand-in runs such a hook, as 2.54 would.
    let probe = Command::new(fake.path().join("git"))
        .current_dir(&repo)
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "safe.directory")
        .env("GIT_CONFIG_VALUE_0", &repo)
        .args(["update-ref", "refs/probe", "HEAD"])
        .output()
        .unwrap();
    assert!(
        probe.status.success(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    assert!(
        marks.join("hook").exists(),
        "the stand-in runs configured hooks"
    );
    std::fs::remove_file(marks.join("hook")).unwrap();
    chown_tree(&repo, uid);

    let shown = hive.ok(&["config", "show", "alice"]);
    let edited = format!("{shown}# edited by the operator\n");
    let (code, sha, err) = cli_with_input(
        &hive,
        &["config", "commit", "alice", "-m", "operator edit"],
        &edited,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        !marks.join("hook").exists(),
        "the manager's configured hook ran on the host as uid {}",
        std::fs::read_to_string(marks.join("hook")).unwrap_or_default()
    );
    // The edit landed: the branch moved to it, and it stays the repo owner's.
    assert_eq!(hive.ok(&["config", "show", "alice"]), edited);
    let head = repo.join(".git/refs/heads/main");
    assert_eq!(std::fs::read_to_string(&head).unwrap().trim(), sha.trim());
    assert_eq!(std::fs::metadata(&head).unwrap().uid(), uid);
}

/// The operator's edit of alice (haiku to sonnet), committed with `config
/// commit`: the edited text and the commit's full sha.
fn operators_commit(hive: &TestHive) -> (String, String) {
    let edited = hive
        .ok(&["config", "show", "alice"])
        .replace("model = \"haiku\"", "model = \"sonnet\"");
    let (code, sha, err) = cli_with_input(hive, &["config", "commit", "alice"], &edited);
    assert_eq!(code, 0, "{err}");
    (edited, sha.trim().to_owned())
}

#[test]
fn text_the_manager_puts_behind_the_operators_commit_is_refused_when_requested() {
    let Some((hive, repo, _)) = hive_with_agent_owned_repo() else {
        return;
    };
    let (edited, sha) = operators_commit(&hive);

    // The manager writes the repo's object files: it makes an object of
    // its own text and copies it over the file of the operator's blob.
    let git = |args: &[&str]| common::git(&repo, args).trim().to_owned();
    let evil = edited.replace("model = \"sonnet\"", "model = \"opus\"");
    let blob = git(&["rev-parse", &format!("{sha}:agent.toml")]);
    let evil_file = hive.dir.path().join("evil.toml");
    std::fs::write(&evil_file, &evil).unwrap();
    let other = git(&["hash-object", "-w", evil_file.to_str().unwrap()]);
    let file = |id: &str| repo.join(".git/objects").join(&id[..2]).join(&id[2..]);
    std::fs::set_permissions(file(&blob), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::copy(file(&other), file(&blob)).unwrap();
    assert_eq!(
        git(&["cat-file", "blob", &format!("{sha}:agent.toml")]),
        evil.trim(),
        "git reads the manager's text behind the operator's sha"
    );

    let out = hive.cli(&["request-apply-commit", "alice", &sha]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the swapped text was queued for approval"
    );
    assert!(
        said.contains(&format!("blob {} in", &blob[..12]))
            && said.contains("does not hash to its name"),
        "{said}"
    );
    assert_eq!(hive.ok(&["approvals"]).trim(), "no approvals");
    assert_eq!(hive.row("alice").unwrap()["active_model"], "haiku");
}

/// The manager names a tag as the operator's commit (its short sha, as
/// `status` and the approvals show it) and points it at a commit of its
/// own: git takes the ref before the sha, so the operator's request read
/// the manager's text as the operator's edit. A sha names only its commit.
#[test]
fn a_tag_named_like_the_operators_sha_does_not_stand_in_for_it() {
    let Some((hive, repo, uid)) = hive_with_agent_owned_repo() else {
        return;
    };
    let (edited, sha) = operators_commit(&hive);
    let git = |args: &[&str]| common::git(&repo, args).trim().to_owned();
    std::fs::write(repo.join("agent.toml"), edited.replace("sonnet", "opus")).unwrap();
    git(&["commit", "-qam", "the manager's"]);
    let theirs = git(&["rev-parse", "HEAD"]);
    git(&["tag", &sha[..12], &theirs]);
    chown_tree(&repo, uid);

    let out = hive.cli(&["request-apply-commit", "alice", &sha[..12]]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the manager's commit was queued as the operator's"
    );
    assert!(said.contains("a ref there is named like a sha"), "{said}");
    assert_eq!(hive.ok(&["approvals"]).trim(), "no approvals");
    // The full sha still reads the operator's own text.
    let queued = hive.ok(&["request-apply-commit", "alice", &sha]);
    let id = queued
        .trim()
        .trim_start_matches("approval #")
        .trim_end_matches(" queued");
    let diff = hive.ok(&["approvals", "show", id]);
    assert!(diff.contains("+model = \"sonnet\""), "{diff}");
}
