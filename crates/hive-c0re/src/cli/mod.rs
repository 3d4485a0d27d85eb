//! The `hive-c0re` command line: `serve`, and the operator's verbs, each a host.sock request.

/// `println!` for the CLI's output: when the reader has gone (`| head`), the
/// process ends quietly with success instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::line(format_args!($($arg)*))
    };
}

pub mod exit;
mod output;
mod secret;
mod shell;
mod transcript;

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use hive_sh4re::host::client::{self, Client};
use hive_sh4re::host::{Scope, verb};
use hive_sh4re::secret::SecretName;
use hive_sh4re::{AgentName, Mailbox};

use crate::paths::Paths;
use crate::serve_config::{self, ConfigFile, Resolved, ServeArgs};

/// Why a client verb did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Talking to the daemon failed, or it refused.
    #[error(transparent)]
    Client(#[from] client::Error),
    /// The verb failed on this side (e.g. stdin could not be read).
    #[error("{0}")]
    Failed(String),
    /// The command line asks for something it may not, or not like this.
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    /// The process exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Client(client::Error::Refused(_)) | Self::Failed(_) => exit::REFUSED,
            Self::Client(_) => exit::UNREACHABLE,
            Self::Usage(_) => exit::USAGE,
        }
    }
}

/// hive-c0re: the host daemon of a hyperhive, and the operator's command line.
///
/// Start the hive with `hive-c0re serve`; every other command talks to it
/// through its admin socket (`<run-dir>/host.sock`).
#[derive(Debug, Parser)]
#[command(
    name = "hive-c0re",
    version,
    propagate_version = true,
    after_help = "Exit codes: 0 done · 1 refused (the daemon's sentence is on stderr) · \
2 hive-c0re not running or not reachable · 64 usage error (nothing was done)"
)]
pub struct Cli {
    /// Where the database and agent state live [default: /var/lib/hyperhive as root, else $XDG_STATE_HOME/hyperhive].
    #[arg(long, global = true, env = "HIVE_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where the sockets live [default: /run/hyperhive as root, else $XDG_RUNTIME_DIR/hyperhive].
    #[arg(long, global = true, env = "HIVE_RUN_DIR", value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The settings of `serve` or `doctor` on the command line `argv`: flags,
    /// environment, then `--config` or `default_file` (see `serve_config`).
    pub fn settings(argv: &[OsString], default_file: &Path) -> crate::error::Result<Resolved> {
        serve_config::resolve(&Self::command(), argv, default_file)
    }

    /// Parses the command line; a usage error exits with [`exit::USAGE`]
    /// after clap's explanation (help and version exit 0).
    pub fn parse_or_exit() -> Self {
        Self::try_parse().unwrap_or_else(|e| {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::DONE
            };
            let _ = e.print();
            std::process::exit(code)
        })
    }
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: store, agents, admin socket and dashboard.
    ///
    /// Every setting can also come from the environment (HIVE_INBOX_CAP, ...) or the
    /// config file (inbox_cap = ...): flags over environment over file over defaults.
    Serve {
        #[command(flatten)]
        settings: ServeArgs,
        #[command(flatten)]
        config: ConfigFile,
        /// Print the settings serve would use, with where each came from, and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Check this host for what a hive needs; one line per problem, with the fix. Exit 0 when all is well.
    ///
    /// Reads the same settings as serve (flags, environment, config file).
    Doctor {
        #[command(flatten)]
        settings: ServeArgs,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Show every agent: running, state, model, inbox depth, config sha, last turn
    /// (and its home node, once agents live on more than one).
    Status {
        /// One JSON object per agent (the host.sock AgentStatusRow), after a
        /// `{"space_alarm": ...}` line while the disk is nearly full.
        #[arg(long)]
        json: bool,
    },
    /// Send a message to an agent as the operator.
    ///
    /// Each send carries a key. When the database was out of reach, the
    /// message may have been stored all the same: the error names its key,
    /// and the same send repeated with `--key` is stored once.
    Send {
        /// The recipient agent.
        to: Mailbox,
        /// The message; `-` reads it from standard input.
        body: String,
        /// The key of an earlier try of this send, from its error (a new one
        /// when not given); at most 64 bytes.
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
    },
    /// Read and acknowledge an inbox (the operator's by default).
    Recv {
        /// Whose inbox: `operator` or an agent name.
        #[arg(long = "as", value_name = "NAME", default_value = "operator")]
        as_: Mailbox,
        /// Wait up to this many seconds for the first message.
        #[arg(long, value_name = "SECS", default_value_t = 0.0, value_parser = parse_wait)]
        wait: f64,
        /// Most messages to read.
        #[arg(long, default_value_t = 100)]
        max: u32,
        /// One JSON object per message: id, from, to, body, sent_at.
        #[arg(long)]
        json: bool,
    },
    /// Park an agent's turn loop; messages keep queueing (survives restarts).
    Pause { name: AgentName },
    /// Resume a paused agent.
    Resume { name: AgentName },
    /// Create an agent with a default config and start it.
    Spawn {
        name: AgentName,
        /// Claude model: an alias (haiku, sonnet, opus) or an id (claude-...) [default: haiku].
        #[arg(long)]
        model: Option<String>,
        /// The agent's home node, the daemon that runs it (see `hive-c0re nodes`)
        /// [default: the node that handles the request]. It must be up.
        #[arg(long, value_name = "NODE")]
        node: Option<hive_sh4re::NodeName>,
    },
    /// Start a stopped or failed agent.
    Start { name: AgentName },
    /// Stop an agent (SIGTERM, SIGKILL after a grace); it stays stopped across restarts.
    Kill {
        name: AgentName,
        /// Needed to kill the manager.
        #[arg(long)]
        yes: bool,
    },
    /// Stop an agent after its current turn ends.
    Stop { name: AgentName },
    /// Stop and start an agent.
    Restart { name: AgentName },
    /// Remove an agent from the hive; its state stays on disk unless --purge.
    Destroy {
        name: AgentName,
        /// Also delete its state, config repo, messages and events.
        #[arg(long)]
        purge: bool,
        /// Needed to destroy the manager.
        #[arg(long)]
        yes: bool,
    },
    /// Create a future agent's config repo (default config); edit, commit, then request-spawn.
    InitConfig { name: AgentName },
    /// Queue an approval to create an agent from its config repo.
    RequestSpawn {
        name: AgentName,
        /// Why, for the operator.
        #[arg(long)]
        description: Option<String>,
        /// The agent's home node (see `hive-c0re nodes`) [default: the node that approves it].
        #[arg(long, value_name = "NODE")]
        node: Option<hive_sh4re::NodeName>,
    },
    /// Queue an approval to deploy a commit of an agent's config repo.
    RequestApplyCommit {
        agent: AgentName,
        sha: String,
        /// Why, for the operator.
        #[arg(long)]
        description: Option<String>,
    },
    /// List approvals (all statuses), or show one with `approvals show ID`.
    Approvals {
        #[command(subcommand)]
        show: Option<ApprovalsCommand>,
        #[arg(long)]
        json: bool,
    },
    /// Approve an approval and carry it out now.
    Approve {
        #[arg(value_parser = parse_id)]
        id: i64,
        /// The diff id `approvals show ID` printed: refused if the diff changed since
        /// (another approval of the agent was deployed meanwhile).
        #[arg(long)]
        seen: Option<String>,
    },
    /// Deny an approval.
    Deny {
        #[arg(value_parser = parse_id)]
        id: i64,
        /// Told to the requester.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Print an agent's turns as a transcript, as the dashboard's terminal shows them (--json: the raw events).
    Events {
        agent: AgentName,
        /// Only events after this id.
        #[arg(long, value_name = "ID", value_parser = parse_id)]
        since: Option<i64>,
        /// How many of the newest events to print (without --since).
        #[arg(long, default_value_t = 200)]
        limit: u32,
        /// Keep printing new events as they come.
        #[arg(long, short)]
        follow: bool,
        /// The raw events, one JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Stop an agent's current turn (or end its nap); refused when it has neither.
    Cancel { name: AgentName },
    /// Compact an agent's claude session.
    Compact { name: AgentName },
    /// Rewrite an agent's notes file (/state/notes.md) shorter, keeping the old one as notes.md.prev.
    CompactNotes { name: AgentName },
    /// Start an agent's next turn in a fresh claude session (e.g. when its session is broken).
    ///
    /// The old transcript stays in the agent's /state; the agent keeps its notes and inbox.
    NewSession { name: AgentName },
    /// Show an agent's model, or override it (from its next turn on; `default` clears the override).
    ///
    /// MODEL is an alias (haiku, sonnet, opus) or a full id (claude-...);
    /// another name is passed on with a warning, for a model server that knows it.
    Model {
        name: AgentName,
        model: Option<String>,
    },
    /// List the manager's questions to the operator.
    Questions {
        #[arg(long)]
        json: bool,
    },
    /// What waits on you: open questions, approvals, failed, restarting and parked agents.
    Needs {
        #[arg(long)]
        json: bool,
    },
    /// Answer a question.
    Answer {
        #[arg(value_parser = parse_id)]
        id: i64,
        answer: String,
    },
    /// Cancel a pending question.
    CancelQuestion {
        #[arg(value_parser = parse_id)]
        id: i64,
    },
    /// Print the hive's URLs: the dashboard, and a new one-time link that logs a browser in to it.
    Urls,
    /// Log every browser out of this node's dashboard (a new login key); the
    /// scripts' token (X-Hive-Token) stays as it is. Live streams and
    /// shells the browsers hold open end at once.
    Logout,
    /// Scheduled prompts: add, list, rm.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Secrets for the agents' claude (environment variables): set, list, rm.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// An agent's config repo as the operator edits it: show, commit.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Open a shell in the agent's container (root of its user namespace, in /state).
    ///
    /// The terminal goes raw until the shell exits; the exit code is the shell's.
    Shell { name: AgentName },
    /// The operator's notifications (messages, questions, approvals, crashes...), newest first;
    /// `notifications read ID|--all` marks them read.
    Notifications {
        #[command(subcommand)]
        read: Option<NotificationsCommand>,
        /// Only unread ones.
        #[arg(long)]
        unread: bool,
        /// How many (default 50).
        #[arg(long)]
        limit: Option<u32>,
        /// One JSON object per notification.
        #[arg(long)]
        json: bool,
    },
    /// The hive's nodes (hive-c0re daemons): alive or down, agents, last heartbeat, address.
    ///
    /// A node is the daemon `hive-c0re serve --node NAME` runs (default NAME:
    /// the host's name); each agent has one as its home. A node heartbeats
    /// every 5 seconds and counts as down once its last heartbeat is older
    /// than three intervals (15 s): it stopped or lost its store. On sqlite a
    /// hive has one host; a node listed down there is an earlier name of it.
    Nodes {
        /// One JSON object per node: name, address, agents, last_heartbeat,
        /// started_at (RFC 3339 UTC) and alive.
        #[arg(long)]
        json: bool,
    },
    /// The webhooks' deliveries: pending notifications, attempts, the last error.
    Webhooks {
        #[arg(long)]
        json: bool,
    },
    /// Daily budgets: today's spend (UTC) against each, or raise/lift one for today.
    ///
    /// `hive-c0re budget` lists; `hive-c0re budget NAME --usd 10 [--tokens N]` sets
    /// NAME's limits for the rest of today (a measure not given stays), `--reset`
    /// lifts its budget until 00:00 UTC; `--hive` instead of NAME changes the hive's.
    /// A held agent resumes at once.
    Budget {
        /// The agent whose budget to change.
        #[arg(conflicts_with = "hive")]
        name: Option<AgentName>,
        /// Change the hive-wide budget.
        #[arg(long)]
        hive: bool,
        /// Today's limit in dollars.
        #[arg(long, value_name = "USD")]
        usd: Option<f64>,
        /// Today's limit in tokens (input plus output).
        #[arg(long, value_name = "N")]
        tokens: Option<u64>,
        /// Lift the budget for the rest of today.
        #[arg(long, conflicts_with_all = ["usd", "tokens"])]
        reset: bool,
        #[arg(long)]
        json: bool,
    },
    /// Telemetry: turns/min, tool calls per turn, turn duration p50/p95, exits, inbox, messages, tools.
    Stats {
        /// One agent (default: every agent).
        name: Option<AgentName>,
        /// The window, e.g. 90s, 15m, 1h, 2d.
        #[arg(long, default_value = "1h", value_parser = parse_window)]
        since: Duration,
        #[arg(long)]
        json: bool,
    },
}

/// `hive-c0re approvals ...`
#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Show one approval and what approving it changes: the diff of the
    /// agent.toml it pins against the deployed one (what the dashboard shows).
    Show {
        #[arg(value_parser = parse_id)]
        id: i64,
    },
}

/// `hive-c0re schedule ...`
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Schedule a message from `system` to an agent.
    ///
    /// WHEN is `30s`/`2h` (once, from now), an RFC 3339 time (once),
    /// `every:15m` (repeating), or `cron:"0 0 9 * * Mon-Fri"` (sec min hour day month weekday).
    Add {
        agent: AgentName,
        when: String,
        text: String,
    },
    /// List schedules, soonest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a schedule.
    Rm {
        #[arg(value_parser = parse_id)]
        id: i64,
    },
}

/// `hive-c0re notifications ...`
#[derive(Debug, Subcommand)]
pub enum NotificationsCommand {
    /// Mark a notification read, or every one with --all.
    Read {
        #[arg(required_unless_present = "all", conflicts_with = "all", value_parser = parse_id)]
        id: Option<i64>,
        #[arg(long)]
        all: bool,
    },
}

/// `hive-c0re secret ...`
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store a secret: every agent's claude gets it as the environment variable
    /// NAME from its next turn (with --agent, that agent's only, over a
    /// hive-wide one). The value is read from stdin, never the command line:
    /// `printf %s "$KEY" | hive-c0re secret set ANTHROPIC_API_KEY`.
    Set {
        #[arg(value_parser = parse_secret_name)]
        name: SecretName,
        /// For this agent only.
        #[arg(long)]
        agent: Option<AgentName>,
    },
    /// List secrets: name, scope and when set; never a value.
    List {
        /// One JSON object per secret.
        #[arg(long)]
        json: bool,
    },
    /// Remove a secret (the hive-wide one, or with --agent that agent's own).
    Rm {
        #[arg(value_parser = parse_secret_name)]
        name: SecretName,
        #[arg(long)]
        agent: Option<AgentName>,
    },
}

/// The operator's edit of a config repo. The repo belongs to the agent
/// (the manager writes it), so running git in it as root would run what it
/// names; hive-c0re does the commit itself, safely.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print agent.toml at the head of NAME's config repo.
    Show { name: AgentName },
    /// Commit agent.toml (read from stdin, or --file) to NAME's config repo,
    /// on top of its head; prints the commit. It deploys nothing: request it
    /// (request-apply-commit NAME SHA, or request-spawn NAME) and approve it.
    Commit {
        name: AgentName,
        /// The commit message.
        #[arg(short, long)]
        message: Option<String>,
        /// Read agent.toml from this file instead of stdin.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

fn parse_secret_name(s: &str) -> Result<SecretName, String> {
    SecretName::parse(s).map_err(|e| e.0)
}

/// The `agent.toml` text `config commit` sends: the file, else stdin (bounded).
fn read_config(file: Option<&Path>) -> Result<String, CliError> {
    const MAX: u64 = 256 * 1024;
    let mut buf = Vec::new();
    let read = match file {
        Some(f) => std::fs::File::open(f).and_then(|f| f.take(MAX + 1).read_to_end(&mut buf)),
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                return Err(CliError::Usage(
                    "config commit reads agent.toml from stdin or --file: e.g. hive-c0re config commit dave < agent.toml".into(),
                ));
            }
            std::io::stdin().lock().take(MAX + 1).read_to_end(&mut buf)
        }
    };
    let from = file.map_or("stdin".to_owned(), |f| f.display().to_string());
    read.map_err(|e| CliError::Usage(format!("could not read agent.toml from {from}: {e}")))?;
    if buf.len() as u64 > MAX {
        return Err(CliError::Usage(format!(
            "{from} is over {MAX} bytes: an agent.toml must be smaller"
        )));
    }
    String::from_utf8(buf).map_err(|_| CliError::Usage(format!("{from} is not UTF-8 text")))
}

/// An id of the hive's (approval, question, event, notification): the
/// number its list shows.
fn parse_id(s: &str) -> Result<i64, String> {
    match s.trim().trim_start_matches('#').parse::<i64>() {
        Ok(id) if id >= 0 => Ok(id),
        _ => Err(format!(
            "an id is the number its list shows (such as 12 or #12), not {s:?}"
        )),
    }
}

/// `recv --wait`: seconds, at most an hour (a longer wait is a loop's job).
fn parse_wait(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(w) if (0.0..=3600.0).contains(&w) => Ok(w),
        _ => Err(format!(
            "--wait takes 0 to 3600 seconds, such as 30 or 0.5, not {s:?}"
        )),
    }
}

/// Reads `stats --since`: a duration (`90s`, `15m`, `1h`, `2d`), longer than nothing.
pub fn parse_window(s: &str) -> Result<Duration, String> {
    let d = hive_sh4re::duration::parse(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("the window must be longer than 0s".into());
    }
    Ok(d)
}

/// Runs a client verb (everything but `serve`); returns the exit code.
pub fn run_client(paths: &Paths, command: Command) -> i32 {
    let result = match &command {
        Command::Shell { name } => shell::run(paths, name),
        _ => client_verb(paths, command).map(|()| exit::DONE),
    };
    result.unwrap_or_else(|e| {
        // A refusal may quote what an agent wrote.
        eprintln!("hive-c0re: {}", output::printable(&e.to_string()));
        e.exit_code()
    })
}

/// Refuses to act on the manager without `--yes`: it is what proposes agents
/// and config changes, and a slip of the name should not end it.
fn confirm_manager(name: &AgentName, yes: bool, action: &str) -> Result<(), CliError> {
    if name.is_manager() && !yes {
        return Err(CliError::Usage(format!(
            "{name} is the hive's manager: to {action} it, run again with --yes"
        )));
    }
    Ok(())
}

/// Warns when a model is neither a claude alias nor a claude id (a typo, or a
/// model only a custom endpoint knows); the daemon still checks its form.
fn warn_unknown_model(model: &str) {
    if !hive_sh4re::config::is_claude_model(model) {
        eprintln!(
            "hive-c0re: warning: {model:?} is not a claude model alias (haiku, sonnet, opus) or id (claude-...): \
             claude passes it to the model server as given"
        );
    }
}

fn client_verb(paths: &Paths, command: Command) -> Result<(), CliError> {
    // Checks of the command line come before the daemon is asked anything.
    match &command {
        Command::Kill { name, yes } => confirm_manager(name, *yes, "kill")?,
        Command::Destroy { name, yes, .. } => confirm_manager(name, *yes, "destroy")?,
        Command::Spawn { model: Some(m), .. } => warn_unknown_model(m),
        Command::Model { model: Some(m), .. } if !m.is_empty() && m != "default" => {
            warn_unknown_model(m)
        }
        _ => {}
    }
    // Read before the daemon is asked anything: a prompt may wait on a person.
    let secret_value = match &command {
        Command::Secret(SecretCommand::Set { name, .. }) => Some(secret::read_value(name)?),
        _ => None,
    };
    let config_text = match &command {
        Command::Config(ConfigCommand::Commit { file, .. }) => Some(read_config(file.as_deref())?),
        _ => None,
    };
    let mut c = Client::connect(paths.host_sock())?;
    c.set_timeout(answer_limit(&command))?;
    match command {
        Command::Serve { .. } | Command::Doctor { .. } => {
            unreachable!("serve and doctor are not client verbs")
        }
        Command::Shell { .. } => unreachable!("shell has its own loop"),
        Command::Status { json } => {
            let answer = c.call(verb::AgentStatus {})?;
            let rows = answer.agent_statuses.unwrap_or_default();
            if json {
                if let Some(a) = &answer.space_alarm {
                    output::json_lines(&[serde_json::json!({ "space_alarm": a })]);
                }
                if let Some(b) = &answer.api_backoff {
                    output::json_lines(&[serde_json::json!({ "api_backoff": b })]);
                }
                output::json_lines(&rows)
            } else {
                if let Some(a) = &answer.space_alarm {
                    output::space_alarm(a);
                }
                if let Some(b) = &answer.api_backoff {
                    output::api_backoff(b);
                }
                // A daemon without webhooks (or an older one) has nothing to add.
                if let Ok(w) = c.call(verb::Webhooks {}) {
                    output::failing_webhooks(&w.webhooks.unwrap_or_default());
                }
                output::status(&rows)
            }
        }
        Command::Send { to, body, key } => {
            let body = if body == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s).map_err(|e| {
                    CliError::Failed(format!(
                        "could not read the message from standard input: {e}"
                    ))
                })?;
                s
            } else {
                body
            };
            let r = c.call(verb::Send {
                to: to.clone(),
                body,
                key: Some(key.unwrap_or_else(hive_sh4re::new_send_key)),
            })?;
            out!("sent message #{} to {to}", r.message_id.unwrap_or_default());
        }
        Command::Recv {
            as_,
            wait,
            max,
            json,
        } => {
            let wait_ms = Some(Duration::from_secs_f64(wait).as_millis() as u64);
            let msgs = c
                .call(verb::Recv {
                    as_: Some(as_.clone()),
                    max: Some(max),
                    wait_ms,
                })?
                .messages
                .unwrap_or_default();
            if msgs.is_empty() {
                // On stderr, so a script reading stdout still sees nothing.
                let mailbox = match &as_ {
                    Mailbox::Operator => "your inbox".to_owned(),
                    m => format!("{m}'s inbox"),
                };
                if wait > 0.0 {
                    eprintln!("hive-c0re: no message came to {mailbox} within {wait} s");
                } else {
                    eprintln!("hive-c0re: no messages in {mailbox}");
                }
            } else if json {
                output::json_lines(&msgs)
            } else {
                output::messages(&msgs)
            }
        }
        Command::Pause { name } => ok(
            c.call(verb::SetPaused {
                name: name.clone(),
                paused: true,
            }),
            &format!("paused {name}"),
        )?,
        Command::Resume { name } => ok(
            c.call(verb::SetPaused {
                name: name.clone(),
                paused: false,
            }),
            &format!("resumed {name}"),
        )?,
        Command::Spawn { name, model, node } => ok(
            c.call(verb::Spawn {
                name: name.clone(),
                model,
                node,
            }),
            &format!("spawned {name}"),
        )?,
        Command::Start { name } => ok(
            c.call(verb::Start { scope: one(&name) }),
            &format!("started {name}"),
        )?,
        Command::Kill { name, .. } => ok(
            c.call(verb::Kill { name: name.clone() }),
            &format!("killed {name}"),
        )?,
        Command::Stop { name } => ok(
            c.call(verb::Stop {
                scope: one(&name),
                graceful: true,
            }),
            &format!("stopped {name}"),
        )?,
        Command::Restart { name } => ok(
            c.call(verb::Restart { name: name.clone() }),
            &format!("restarted {name}"),
        )?,
        Command::Destroy { name, purge, .. } => {
            let what = if purge {
                "destroyed {name} and purged its state"
            } else {
                "destroyed {name} (its state is kept)"
            };
            ok(
                c.call(verb::Destroy {
                    name: name.clone(),
                    purge,
                }),
                &what.replace("{name}", name.as_str()),
            )?
        }
        Command::InitConfig { name } => {
            let r = c.call(verb::InitConfig { name: name.clone() })?;
            // An older daemon does not say where; on several nodes it is the manager's node.
            let at = r.repo.map(|at| format!(" at {at}")).unwrap_or_default();
            out!(
                "created the config repo of {name}{at}: edit it with hive-c0re config show {name} / config commit {name}, then hive-c0re request-spawn {name}"
            );
        }
        Command::Config(ConfigCommand::Show { name }) => {
            let r = c.call(verb::ConfigShow { name })?;
            let text = r.config.unwrap_or_default();
            out!("{}", text.strip_suffix('\n').unwrap_or(&text));
            // Printed as it is, for an edit to commit back; what a screen
            // would not show is said apart.
            for (n, line) in text.lines().enumerate() {
                if line.chars().any(hive_sh4re::text::shows_nothing) {
                    eprintln!(
                        "warning: line {} holds characters that show nothing: {}",
                        n + 1,
                        hive_sh4re::text::visible(line)
                    );
                }
            }
        }
        Command::Config(ConfigCommand::Commit { name, message, .. }) => {
            let text = config_text.expect("read above");
            let r = c.call(verb::ConfigCommit {
                name: name.clone(),
                text,
                message,
            })?;
            let sha = r.sha.unwrap_or_default();
            out!("{sha}");
            eprintln!(
                "committed to {name}'s config repo; deploy it with: hive-c0re request-apply-commit {name} {sha} (a new agent: hive-c0re request-spawn {name}), then approve"
            );
        }
        Command::RequestSpawn {
            name,
            description,
            node,
        } => {
            let r = c.call(verb::RequestSpawn {
                name,
                description,
                node,
            })?;
            out!("approval #{} queued", r.approval_id.unwrap_or_default());
        }
        Command::RequestApplyCommit {
            agent,
            sha,
            description,
        } => {
            let r = c.call(verb::RequestApplyCommit {
                agent,
                sha,
                description,
            })?;
            out!("approval #{} queued", r.approval_id.unwrap_or_default());
        }
        Command::Approvals {
            show: Some(ApprovalsCommand::Show { id }),
            ..
        } => {
            let items = c.call(verb::Pending {})?.approvals.unwrap_or_default();
            let shown = c.call(verb::ApprovalDiff { id })?;
            let diff = shown.diff.unwrap_or_default();
            let items: Vec<_> = items.into_iter().filter(|a| a.id == id).collect();
            output::approvals(&items);
            for a in items.iter().filter(|a| a.node.is_some()) {
                out!(
                    "{} {} on node {}",
                    a.kind,
                    a.agent,
                    a.node.as_deref().unwrap_or_default()
                );
            }
            for w in items.iter().flat_map(|a| &a.warnings) {
                out!("warning: {}", w.message);
            }
            out!("\n{}", diff.trim_end_matches('\n'));
            if let Some(seen) = shown.diff_id {
                out!("\nto approve exactly this diff: hive-c0re approve {id} --seen {seen}");
            }
        }
        Command::Approvals { show: None, json } => {
            let items = c.call(verb::Pending {})?.approvals.unwrap_or_default();
            if json {
                output::json_lines(&items)
            } else {
                output::approvals(&items)
            }
        }
        Command::Approve { id, seen } => ok(
            c.call(verb::Approve { id, seen }),
            &format!("approved #{id}"),
        )?,
        Command::Deny { id, reason } => ok(
            c.call(verb::Deny { id, note: reason }),
            &format!("denied #{id}"),
        )?,
        Command::Events {
            agent,
            since,
            limit,
            follow,
            json,
        } => {
            let first = c.call(verb::Events {
                agent,
                since,
                before: None,
                limit: Some(limit),
                follow,
            })?;
            let mut transcript = transcript::Transcript::default();
            let mut print = |r: hive_sh4re::host::Response| {
                let ev = r.events.unwrap_or_default();
                if json {
                    output::json_lines(&ev)
                } else {
                    for line in ev.iter().flat_map(|e| transcript.lines(e)) {
                        out!("{line}");
                    }
                }
            };
            print(first);
            if follow {
                loop {
                    print(c.read()?);
                }
            }
        }
        Command::Cancel { name } => ok(
            c.call(verb::Cancel { name: name.clone() }),
            &format!("cancelled {name}'s turn"),
        )?,
        Command::Compact { name } => ok(
            c.call(verb::Compact { name: name.clone() }),
            &format!("asked {name} to compact"),
        )?,
        Command::CompactNotes { name } => ok(
            c.call(verb::CompactNotes { name: name.clone() }),
            &format!("asked {name} to compact its notes"),
        )?,
        Command::NewSession { name } => ok(
            c.call(verb::NewSession { name: name.clone() }),
            &format!("{name} starts a fresh claude session at its next turn"),
        )?,
        Command::Model { name, model } => {
            let info = c
                .call(verb::SetModel {
                    name: name.clone(),
                    model,
                })?
                .model
                .unwrap_or_default();
            let over = info
                .override_model
                .map(|m| format!(" (operator override: {m})"))
                .unwrap_or_default();
            out!(
                "{name}: active {} · configured {}{over}",
                info.active,
                info.configured
            );
        }
        Command::Questions { json } => {
            let items = c.call(verb::Questions {})?.questions.unwrap_or_default();
            if json {
                output::json_lines(&items)
            } else {
                output::questions(&items)
            }
        }
        Command::Needs { json } => {
            let items = c.call(verb::NeedsYou {})?.needs_you.unwrap_or_default();
            if json {
                output::json_lines(&items)
            } else {
                output::needs(&items)
            }
        }
        Command::Answer { id, answer } => ok(
            c.call(verb::Answer { id, answer }),
            &format!("answered #{id}"),
        )?,
        Command::CancelQuestion { id } => ok(
            c.call(verb::CancelQuestion { id }),
            &format!("cancelled question #{id}"),
        )?,
        Command::Schedule(ScheduleCommand::Add { agent, when, text }) => {
            let r = c.call(verb::ScheduleAdd {
                agent: agent.clone(),
                when,
                text,
            })?;
            out!(
                "schedule #{} added for {agent}",
                r.schedule_id.unwrap_or_default()
            );
        }
        Command::Schedule(ScheduleCommand::List { json }) => {
            let items = c.call(verb::ScheduleList {})?.schedules.unwrap_or_default();
            if json {
                output::json_lines(&items)
            } else {
                output::schedules(&items)
            }
        }
        Command::Schedule(ScheduleCommand::Rm { id }) => ok(
            c.call(verb::ScheduleRm { id }),
            &format!("removed schedule #{id}"),
        )?,
        Command::Secret(SecretCommand::Set { name, agent }) => {
            let value = secret_value.expect("read above");
            let scope = match &agent {
                Some(a) => format!("for {a}"),
                None => "for every agent".to_owned(),
            };
            c.call(verb::SecretSet {
                name: name.clone(),
                agent,
                value,
            })?;
            out!("secret {name} set {scope}: claude has it from the next turn");
        }
        Command::Secret(SecretCommand::List { json }) => {
            let items = c.call(verb::SecretList {})?.secrets.unwrap_or_default();
            if json {
                output::json_lines(&items)
            } else {
                output::secrets(&items)
            }
        }
        Command::Secret(SecretCommand::Rm { name, agent }) => {
            let scope = match &agent {
                Some(a) => format!("{a}'s"),
                None => "the hive-wide".to_owned(),
            };
            ok(
                c.call(verb::SecretRm {
                    name: name.clone(),
                    agent,
                }),
                &format!("removed {scope} secret {name}"),
            )?
        }
        Command::Notifications {
            read: Some(NotificationsCommand::Read { id, all }),
            ..
        } => {
            let unread = c
                .call(verb::NotificationsRead { id, all })?
                .unread
                .unwrap_or_default();
            match id {
                Some(id) => out!("notification #{id} read; {unread} unread"),
                None => out!("every notification read"),
            }
        }
        Command::Notifications {
            read: None,
            unread,
            limit,
            json,
        } => {
            let r = c.call(verb::Notifications { unread, limit })?;
            let items = r.notifications.unwrap_or_default();
            if json {
                output::json_lines(&items)
            } else {
                output::notifications(&items, r.unread.unwrap_or_default())
            }
        }
        Command::Nodes { json } => {
            let rows = c.call(verb::Nodes {})?.nodes.unwrap_or_default();
            if json {
                output::json_lines(&rows)
            } else {
                output::nodes(&rows)
            }
        }
        Command::Webhooks { json } => {
            let items = c.call(verb::Webhooks {})?.webhooks.unwrap_or_default();
            if json {
                output::json_lines(&items)
            } else {
                output::webhooks(&items)
            }
        }
        Command::Budget {
            name,
            hive,
            usd,
            tokens,
            reset,
            json,
        } => {
            let rows = if name.is_none() && !hive {
                if usd.is_some() || tokens.is_some() || reset {
                    return Err(CliError::Usage(
                        "say whose budget: hive-c0re budget NAME ... or hive-c0re budget --hive ..."
                            .into(),
                    ));
                }
                c.call(verb::BudgetList {})?.budgets.unwrap_or_default()
            } else {
                c.call(verb::BudgetSet {
                    agent: name,
                    usd,
                    tokens,
                    reset,
                })?
                .budgets
                .unwrap_or_default()
            };
            if json {
                output::json_lines(&rows)
            } else {
                output::budgets(&rows)
            }
        }
        Command::Stats { name, since, json } => {
            let stats = c
                .call(verb::Stats {
                    agent: name,
                    since_seconds: Some(since.as_secs()),
                })?
                .stats
                .unwrap_or_default();
            if json {
                out!("{}", serde_json::to_string(&stats).unwrap_or_default());
            } else {
                output::stats(&stats);
            }
        }
        Command::Logout => {
            ok(
                c.call(verb::Logout {}),
                "every browser is logged out of this node's dashboard: open a new link from `hive-c0re urls` to log in again",
            )?;
        }
        Command::Urls => {
            let urls = c.call(verb::Urls {})?.urls.unwrap_or_default();
            match urls.home {
                Some(h) => out!("dashboard: {h}"),
                None => out!("no dashboard is served"),
            }
            if let Some(l) = urls.login {
                out!(
                    "log in:    {l}  (logs in the one browser that opens it first, within 10 minutes; run `hive-c0re urls` again for another)"
                );
            }
        }
    }
    Ok(())
}

/// How long the CLI waits on the daemon's answer to `command`: a stream
/// waits as long as it runs; anything else its longest proper wait and a
/// margin, then says the daemon did not answer instead of hanging
/// (`HIVE_CLI_TIMEOUT_SECS` sets it for every verb, for tests).
fn answer_limit(command: &Command) -> Option<Duration> {
    let limit = match command {
        Command::Events { follow: true, .. } => return None,
        Command::Recv { wait, .. } => Duration::from_secs_f64(*wait) + Duration::from_secs(60),
        // A graceful stop waits up to 600 s for the turn to end.
        Command::Stop { .. }
        | Command::Restart { .. }
        | Command::Destroy { .. }
        | Command::Kill { .. }
        | Command::Start { .. }
        | Command::Spawn { .. }
        | Command::Approve { .. } => Duration::from_secs(660),
        _ => Duration::from_secs(120),
    };
    Some(crate::clock::secs_from_env("HIVE_CLI_TIMEOUT_SECS", limit))
}

fn one(name: &AgentName) -> Scope {
    Scope {
        agent_names: Some(vec![name.clone()]),
        all: false,
    }
}

fn ok(r: Result<hive_sh4re::host::Response, client::Error>, done: &str) -> Result<(), CliError> {
    r?;
    out!("{done}");
    Ok(())
}
