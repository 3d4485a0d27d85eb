//! The manager end to end: it proposes an agent and config changes through its
//! MCP tools, nothing happens before the operator approves, questions have a
//! deadline, and crashes reach it. Real claude, scripted model.

mod common;

use std::path::Path;

use common::{ModelSim, Opts, TestDatabase, TestHive};

/// The scripted manager: builds dave's config with Read/Write/git, then asks.
fn manager_script(repo: &Path) -> String {
    let toml = repo.join("agent.toml");
    let (repo, toml) = (repo.display(), toml.display());
    let dave = r#"model = \"haiku\"\nallowed_tools = [\"Read\", \"Bash(git *)\"]\nallowed_recipients = [\"operator\", \"manager\"]\nprompt = \"You are dave.\"\n"#;
    let commit = |then: &str| {
        format!(
            "git -C {repo} -c user.name=manager -c user.email=m@hive commit -qam update && {then}"
        )
    };
    let commit_for_spawn = commit("echo committed-for-spawn");
    let commit_for_apply = commit(&format!("git -C {repo} rev-parse HEAD"));
    format!(
        r#"
[[rule]]
name = "make dave"
user_text = "make dave"
[[rule.reply]]
tool = "mcp__hyperhive__request_init_config"
input = {{ name = "dave" }}

[[rule]]
name = "read template"
tool_result = "created the config repo of dave"
[[rule.reply]]
tool = "Read"
input = {{ file_path = "{toml}" }}

[[rule]]
name = "make dave sonnet"
user_text = "sonnet for dave"
[[rule.reply]]
tool = "Read"
input = {{ file_path = "{toml}" }}

[[rule]]
name = "edit to sonnet"
tool_result = 'prompt = "You are dave."'
[[rule.reply]]
tool = "Edit"
input = {{ file_path = "{toml}", old_string = 'model = "haiku"', new_string = 'model = "sonnet"' }}

[[rule]]
name = "write dave"
tool_result = 'model = "haiku"'
[[rule.reply]]
tool = "Write"
input = {{ file_path = "{toml}", content = "{dave}" }}

[[rule]]
name = "commit for apply"
sender = "system"
tool_result_regex = '(?i)updated'
[[rule.reply]]
tool = "Bash"
input = {{ command = "{commit_for_apply}" }}

[[rule]]
name = "commit for spawn"
sender = "operator"
tool_result_regex = '(?i)(created|updated)'
[[rule.reply]]
tool = "Bash"
input = {{ command = "{commit_for_spawn}" }}

[[rule]]
name = "propose spawn"
tool_result = "committed-for-spawn"
[[rule.reply]]
tool = "mcp__hyperhive__request_spawn"
input = {{ name = "dave", description = "a reviewer with git", node = "hq" }}

[[rule]]
name = "propose commit"
tool_result_regex = '^\s*[0-9a-f]{{40}}\s*$'
[[rule.reply]]
tool = "mcp__hyperhive__request_apply_commit"
input = {{ agent = "dave", sha = "{{{{tool_result}}}}", description = "dave on sonnet" }}

[[rule]]
name = "apply again"
user_text = "apply dave again"
[[rule.reply]]
tool = "Bash"
input = {{ command = "git -C {repo} rev-parse HEAD" }}

[[rule]]
name = "pong"
user_text = "ping"
[[rule.reply]]
tool = "mcp__hyperhive__send"
input = {{ to = "{{{{sender}}}}", body = "pong" }}

[[rule]]
name = "ask quick"
user_text = "ask quick"
[[rule.reply]]
tool = "mcp__hyperhive__ask_operator"
input = {{ question = "quick?", ttl_seconds = 2 }}

[[rule]]
name = "ask color"
user_text = "ask color"
[[rule.reply]]
tool = "mcp__hyperhive__ask_operator"
input = {{ question = "which color?", options = ["blue", "red"], ttl_seconds = 120 }}

[[rule]]
name = "relay answer"
tool_result_regex = '^\s*(\[no answer.*|blue|red)\s*$'
[[rule.reply]]
tool = "mcp__hyperhive__send"
input = {{ to = "operator", body = "manager got: {{{{tool_result}}}}" }}

[[rule]]
name = "crash seen"
sender = "system"
user_text = "Agent dave's harness"
[[rule.reply]]
tool = "mcp__hyperhive__send"
input = {{ to = "operator", body = "manager saw dave crash" }}
"#
    )
}

fn approval_ids(hive: &TestHive, kind: &str, status: &str) -> Vec<String> {
    hive.ok(&["approvals", "--json"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|a| a["kind"] == kind && a["status"] == status)
        .map(|a| a["id"].to_string())
        .collect()
}

#[test]
fn the_manager_grows_the_hive_only_with_approval() {
    if !common::e2e_ready() {
        return;
    }
    let sim = ModelSim::start(None);
    let mut opts = Opts {
        env: sim.env(),
        ..Opts::default()
    };
    opts.args.retain(|a| a != "--no-manager");
    opts.args.extend(["--node".into(), "hq".into()]);
    let hive = TestHive::start_with(opts);
    let repo = hive.state_dir().join("configs/dave");
    sim.set_script(&manager_script(&repo));
    hive.wait_for("the manager", 30, |h| {
        h.row("manager").is_some_and(|r| r["running"] == true)
    });

    // 1. The manager writes dave's config and asks to spawn him; nothing happens before approval.
    hive.ok(&["send", "manager", "make dave"]);
    hive.wait_for("a spawn request", 90, |h| {
        !approval_ids(h, "spawn", "pending").is_empty()
    });
    assert!(hive.row("dave").is_none(), "dave exists before approval");
    let spawn = approval_ids(&hive, "spawn", "pending").remove(0);
    // The manager named dave's home node: the approval shows it.
    let shown = hive.ok(&["approvals", "show", &spawn]);
    assert!(shown.contains("\nspawn dave on node hq\n"), "{shown}");
    hive.ok(&["approve", &spawn]);
    hive.wait_for("dave running", 30, |h| {
        h.row("dave").is_some_and(|r| r["running"] == true)
    });
    let dave = hive.row("dave").unwrap();
    assert_eq!(dave["parent"], "manager");
    assert_eq!(dave["node"], "hq");
    assert_eq!(dave["active_model"], "haiku");
    assert_eq!(dave["deployed_sha"].as_str().unwrap().len(), 12);

    // 2. A model change (prompted by a scheduled message from system), denied: dave keeps his model.
    hive.ok(&["schedule", "add", "manager", "1s", "sonnet for dave"]);
    hive.wait_for("an apply_commit request", 90, |h| {
        !approval_ids(h, "apply_commit", "pending").is_empty()
    });
    let first = approval_ids(&hive, "apply_commit", "pending").remove(0);
    hive.ok(&["deny", &first, "--reason", "not yet"]);
    assert_eq!(hive.row("dave").unwrap()["active_model"], "haiku");
    let denied = sim.requests().iter().any(|r| {
        r["messages"]
            .to_string()
            .contains("was denied by the operator")
    });
    hive.wait_for("the manager hears the denial", 60, |_| {
        denied
            || sim.requests().iter().any(|r| {
                r["messages"]
                    .to_string()
                    .contains("was denied by the operator")
            })
    });

    // 3. Asked again and approved: dave's next claude run uses sonnet and his allow-list.
    hive.ok(&["send", "manager", "apply dave again"]);
    hive.wait_for("a second apply_commit request", 90, |h| {
        !approval_ids(h, "apply_commit", "pending").is_empty()
    });
    let second = approval_ids(&hive, "apply_commit", "pending").remove(0);
    hive.ok(&["approve", &second]);
    hive.wait_for("dave on sonnet", 30, |h| {
        h.row("dave").unwrap()["active_model"] == "sonnet"
    });
    hive.wait_for("dave running", 30, |h| {
        h.row("dave").unwrap()["running"] == true
    });
    hive.ok(&["send", "dave", "ping"]);
    assert_eq!(hive.recv_operator(90)[0]["body"], "pong");
    let dave_turn = hive
        .events("dave")
        .into_iter()
        .rev()
        .find(|e| e["kind"] == "turn_start")
        .unwrap();
    assert_eq!(dave_turn["payload"]["model"], "sonnet");
    let args = dave_turn["payload"]["args"].to_string();
    assert!(args.contains("Read,Bash(git *)"), "{args}");
    assert!(
        sim.requests()
            .iter()
            .any(|r| r["model"].as_str().unwrap_or("").contains("sonnet"))
    );

    // 4. An invalid agent.toml is refused at the request, before the operator
    // is asked; dave keeps his config.
    std::fs::write(
        repo.join("agent.toml"),
        "model = \"sonnet\"\nallowed_tools = [\"Bash(git *\"]\n",
    )
    .unwrap();
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            // The repo belongs to the manager's uid (under a root daemon, in both runtimes).
            .args(["-c", "safe.directory=*"])
            .args(args)
            .status()
            .unwrap()
    };
    assert!(git(&["commit", "-qam", "broken"]).success());
    let out = hive.cli(&["request-apply-commit", "dave", "HEAD"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("allowed_tools[0]") && err.contains("dave's config at"),
        "{err}"
    );
    assert!(approval_ids(&hive, "apply_commit", "pending").is_empty());
    assert_eq!(hive.row("dave").unwrap()["active_model"], "sonnet");
}

#[test]
fn ask_operator_times_out_carries_the_answer_or_is_cancelled() {
    if !common::e2e_ready() {
        return;
    }
    let sim = ModelSim::start(None);
    let mut opts = Opts {
        env: sim.env(),
        ..Opts::default()
    };
    opts.args.retain(|a| a != "--no-manager");
    let hive = TestHive::start_with(opts);
    sim.set_script(&manager_script(Path::new("/nonexistent")));
    hive.wait_for("the manager", 30, |h| {
        h.row("manager").is_some_and(|r| r["running"] == true)
    });

    hive.ok(&["send", "manager", "ask quick"]);
    let got = hive.recv_operator(60);
    assert_eq!(got.len(), 1, "{}", hive.log());
    assert!(
        got[0]["body"].as_str().unwrap().starts_with(
            "manager got: [no answer: the operator did not answer before the deadline]"
        ),
        "{}",
        got[0]
    );

    hive.ok(&["send", "manager", "ask color"]);
    let mut id = String::new();
    hive.wait_for("the question", 60, |h| {
        let qs = h.ok(&["questions", "--json"]);
        if let Some(q) = qs
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|q| q["status"] == "pending")
        {
            id = q["id"].to_string();
        }
        !id.is_empty()
    });
    hive.ok(&["answer", &id, "blue"]);
    let got = hive.recv_operator(60);
    assert_eq!(got[0]["body"], "manager got: blue");
    let out = hive.cli(&["answer", &id, "red"]);
    assert_eq!(out.status.code(), Some(1), "a question was answered twice");

    // Cancelling through host.sock ends the manager's wait at once, with the
    // cancel's sentinel, long before the question's 120 s deadline.
    hive.ok(&["send", "manager", "ask color"]);
    let answered = id.clone();
    let mut id = String::new();
    hive.wait_for("the second question", 60, |h| {
        let qs = h.ok(&["questions", "--json"]);
        if let Some(q) = qs
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|q| q["status"] == "pending")
        {
            id = q["id"].to_string();
        }
        !id.is_empty()
    });
    assert_ne!(id, answered);
    assert_eq!(
        hive.ok(&["cancel-question", &id]).trim(),
        format!("cancelled question #{id}")
    );
    let got = hive.recv_operator(60);
    assert_eq!(got.len(), 1, "{}", hive.log());
    assert_eq!(
        got[0]["body"],
        "manager got: [no answer: the operator cancelled the question]"
    );
    let q: serde_json::Value = hive
        .ok(&["questions", "--json"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|q| q["id"].as_i64() == id.parse().ok())
        .expect("the cancelled question is listed");
    assert_eq!(q["status"], "cancelled", "{q}");
    let out = hive.cli(&["answer", &id, "red"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a cancelled question took an answer"
    );
    let out = hive.cli(&["cancel-question", &id]);
    assert_eq!(out.status.code(), Some(1), "a question was cancelled twice");
}

#[test]
fn a_crash_reaches_the_manager() {
    if !common::e2e_ready() {
        return;
    }
    let sim = ModelSim::start(None);
    let mut opts = Opts {
        env: sim.env(),
        ..Opts::default()
    };
    opts.args.retain(|a| a != "--no-manager");
    let hive = TestHive::start_with(opts);
    sim.set_script(&manager_script(Path::new("/nonexistent")));
    hive.ok(&["spawn", "dave"]);
    hive.wait_for("dave running", 30, |h| {
        h.row("dave").is_some_and(|r| r["running"] == true)
    });
    let pid = common::harness_pid(&hive, "dave");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let got = hive.recv_operator(60);
    assert_eq!(got.len(), 1, "{}", hive.log());
    assert_eq!(got[0]["from"], "manager");
    assert_eq!(got[0]["body"], "manager saw dave crash");
}

/// With several nodes the manager changes the config of an agent on another
/// node: the agent's repo is on the manager's node, in the directory its
/// container binds, and the change runs on the agent's node once approved
/// there.
#[test]
fn the_manager_changes_the_config_of_an_agent_on_another_node() {
    if !common::e2e_ready() {
        return;
    }
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let sim = ModelSim::start(None);
    let mut alpha = Opts::postgres(&db, "alpha");
    alpha.env.extend(sim.env());
    alpha
        .env
        .push(("HIVE_CONFIG_POLL_SECS".into(), "0.2".into()));
    alpha.args.retain(|a| a != "--no-manager");
    let alpha = TestHive::start_with(alpha);
    let mut beta = Opts::postgres(&db, "beta");
    beta.env.extend(sim.env());
    let beta = TestHive::start_with(beta);
    alpha.wait_for("the manager", 30, |h| {
        h.row("manager").is_some_and(|r| r["running"] == true)
    });
    beta.ok(&["spawn", "erin", "--model", "haiku"]);
    beta.wait_for("erin running on beta", 30, |h| {
        h.row("erin").is_some_and(|r| r["running"] == true)
    });
    assert_eq!(beta.row("erin").unwrap()["node"], "beta");
    let repo = alpha.state_dir().join("configs/erin");
    alpha.wait_for("erin's config repo on the manager's node", 20, |_| {
        repo.join(".git").is_dir()
    });

    let (toml, dir) = (repo.join("agent.toml"), repo.display());
    let toml = toml.display();
    sim.set_script(&format!(
        r#"
[[rule]]
name = "read erin"
user_text = "sonnet for erin"
[[rule.reply]]
tool = "Read"
input = {{ file_path = "{toml}" }}

[[rule]]
name = "edit erin"
tool_result = 'model = "haiku"'
[[rule.reply]]
tool = "Edit"
input = {{ file_path = "{toml}", old_string = 'model = "haiku"', new_string = 'model = "sonnet"' }}

[[rule]]
name = "commit"
tool_result_regex = '(?i)updated'
[[rule.reply]]
tool = "Bash"
input = {{ command = "git -C {dir} -c user.name=manager -c user.email=m@hive commit -qam sonnet && git -C {dir} rev-parse HEAD" }}

[[rule]]
name = "propose commit"
tool_result_regex = '^\s*[0-9a-f]{{40}}\s*$'
[[rule.reply]]
tool = "mcp__hyperhive__request_apply_commit"
input = {{ agent = "erin", sha = "{{{{tool_result}}}}", description = "erin on sonnet" }}
"#
    ));
    beta.ok(&["send", "manager", "sonnet for erin"]);
    beta.wait_for("the manager's apply_commit for erin", 90, |h| {
        !approval_ids(h, "apply_commit", "pending").is_empty()
    });
    let id = approval_ids(&beta, "apply_commit", "pending").remove(0);
    let shown = beta.ok(&["approvals", "show", &id]);
    assert!(shown.contains("+model = \"sonnet\""), "{shown}");
    assert_eq!(beta.row("erin").unwrap()["active_model"], "haiku");
    beta.ok(&["approve", &id]);
    beta.wait_for("erin on sonnet, on beta", 30, |h| {
        h.row("erin").unwrap()["active_model"] == "sonnet"
    });
    let head = std::fs::read_to_string(repo.join(".git/refs/heads/main"))
        .or_else(|_| std::fs::read_to_string(repo.join(".git/refs/heads/master")))
        .unwrap_or_default();
    assert_eq!(
        beta.row("erin").unwrap()["deployed_sha"].as_str().unwrap(),
        &head.trim()[..12]
    );
}
