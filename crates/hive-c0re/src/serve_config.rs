//! The settings of `hive-c0re serve`: flags over environment over the config
//! file (`hive.toml`) over defaults.
//!
//! [`ServeArgs`] is the one table of settings. Each of its arguments, and each
//! global option of the command line (`state_dir`, `run_dir`), is a setting: its key in
//! the file is its id, the flag's name with `_` (`--inbox-cap` is `inbox_cap`),
//! and its environment variable is `HIVE_` and the key in capitals. A flag
//! added to [`ServeArgs`] with its `env` is thus a config key and a line of
//! `--print-config` with nothing else to write (a unit test holds new flags to
//! the naming).
//!
//! clap itself merges the layers: the file's values are appended to the
//! command line as flags, only for settings that neither a flag nor the
//! environment set, and the line is parsed again; a file value is checked by
//! the same parser as its flag, and a bad one is refused naming key and file.
//! The command line's grammar is the caller's (`Cli::settings` passes the
//! CLI's own): this module knows the table, not the verbs around it.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches};

use crate::daemon::ServeOptions;
use crate::error::{Error, Result};
use crate::paths::Paths;
use crate::runtime::RuntimeKind;
use crate::runtime::uid_ranges::DEFAULT_UID_BASE;
use crate::store::Limits;

/// The config file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG: &str = "/etc/hyperhive/hive.toml";

/// Every setting of `serve` (also read by `doctor`). Each field needs `long`
/// and `env = "HIVE_<ID>"`; its id is its key in `hive.toml`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// How agents run: nspawn (user-namespaced containers) or process (plain host processes).
    /// Default: nspawn when running as root with systemd-nspawn installed, else process.
    #[arg(long, env = "HIVE_RUNTIME", value_enum)]
    pub runtime: Option<RuntimeKind>,
    /// Serve the dashboard on this address.
    #[arg(
        long,
        env = "HIVE_DASHBOARD",
        value_name = "ADDR",
        default_value = "127.0.0.1:7878"
    )]
    pub dashboard: String,
    /// Serve no dashboard (a `dashboard` set at a higher layer turns it back on).
    #[arg(long, env = "HIVE_NO_DASHBOARD")]
    pub no_dashboard: bool,
    /// Do not create the manager agent at first start.
    #[arg(long, env = "HIVE_NO_MANAGER")]
    pub no_manager: bool,
    /// Undelivered messages one inbox may hold before sends to it are refused.
    #[arg(
        long,
        env = "HIVE_INBOX_CAP",
        default_value_t = 10_000,
        value_name = "N"
    )]
    pub inbox_cap: u64,
    /// Events kept per agent.
    #[arg(
        long,
        env = "HIVE_EVENTS_KEEP",
        default_value_t = 50_000,
        value_name = "N"
    )]
    pub events_keep: u64,
    /// Mebibytes of event payloads kept per agent (its newest history; an agent's
    /// harness may add at most 16 MiB a minute).
    #[arg(
        long,
        env = "HIVE_EVENTS_KEEP_MIB",
        default_value_t = 256,
        value_name = "MIB"
    )]
    pub events_keep_mib: u64,
    /// Figures (turns' statistics) kept per agent, the newest.
    #[arg(
        long,
        env = "HIVE_STATS_KEEP",
        default_value_t = 1_000_000,
        value_name = "N"
    )]
    pub stats_keep: u64,
    /// Delivered messages kept per recipient.
    #[arg(
        long,
        env = "HIVE_DELIVERED_KEEP",
        default_value_t = 5_000,
        value_name = "N"
    )]
    pub delivered_keep: u64,
    /// Age after which history is dropped, in days.
    #[arg(
        long,
        env = "HIVE_HISTORY_DAYS",
        default_value_t = 30,
        value_name = "DAYS"
    )]
    pub history_days: u64,
    /// Seconds between vacuum runs.
    #[arg(
        long,
        env = "HIVE_VACUUM_SECS",
        default_value_t = 60,
        value_name = "SECS"
    )]
    pub vacuum_secs: u64,
    /// First host uid of this hive's agents' ranges (65536 uids each, from here up).
    /// Hives on one host never share a range whatever this is; giving each its own
    /// keeps them apart across reboots too.
    #[arg(
        long,
        env = "HIVE_UID_BASE",
        default_value_t = DEFAULT_UID_BASE,
        value_name = "UID",
        value_parser = parse_uid_base
    )]
    pub uid_base: u32,
    /// Free space the state directory's file system keeps: below it new sends,
    /// schedules and agents' events are refused until space returns (bytes, or e.g. 512MiB).
    /// Default: 5 % of the file system, at most 256 MiB. Free inodes have a floor
    /// of their own, 5 % of them, at most 50,000; 0 turns both off.
    #[arg(
        long,
        env = "HIVE_MIN_FREE_SPACE",
        value_name = "SIZE",
        value_parser = crate::space::parse_size
    )]
    pub min_free_space: Option<u64>,
    /// Most an agent's files (its state dir and harness log; the manager's
    /// with the config repos) may take on its node, measured each minute
    /// (bytes, or e.g. 20GiB; none for no quota): an agent found over it is
    /// stopped and the operator told, so one agent cannot fill the disk for
    /// all. Default: a quarter of the state dir's file system.
    #[arg(
        long,
        env = "HIVE_STATE_QUOTA",
        value_name = "SIZE",
        value_parser = crate::hive::quota::StateQuota::parse
    )]
    pub state_quota: Option<crate::hive::quota::StateQuota>,
    /// Most memory one agent's container may take (bytes, or e.g. 4GiB): past
    /// it the kernel kills processes of that container alone, and the
    /// operator is told. All containers together keep a tenth of the host's
    /// memory free (at least 512 MiB). nspawn runtime only.
    /// Default: a quarter of what the containers may take together, at least 1 GiB.
    #[arg(
        long,
        env = "HIVE_AGENT_MEMORY",
        value_name = "SIZE",
        value_parser = parse_agent_memory
    )]
    pub agent_memory: Option<u64>,
    /// Most CPU one agent's container may take, in cores (e.g. 1.5): its
    /// processes are held to it even when cores are idle. Whatever the cap,
    /// agents that contend share the cores equally, per agent rather than
    /// per process. nspawn runtime only. Default: no cap.
    #[arg(
        long,
        env = "HIVE_AGENT_CPUS",
        value_name = "CORES",
        value_parser = parse_agent_cpus
    )]
    pub agent_cpus: Option<f64>,
    /// The networks of the host's that agents' containers may reach besides
    /// the internet, comma-separated (e.g. 10.1.2.0/24,fd00:1::/64), or `all`.
    /// By default a container reaches none of the host's own addresses, private
    /// (10/8, 172.16/12, 192.168/16, fc00::/7), link-local (the cloud's metadata
    /// service) or shared addresses: only DNS through the host's resolvers and a
    /// model endpoint named by address. nspawn runtime only; needs nftables.
    #[arg(
        long,
        env = "HIVE_ALLOW_NETWORKS",
        value_name = "NETWORKS",
        value_parser = parse_allow_networks
    )]
    pub allow_networks: Option<crate::runtime::EgressPolicy>,
    /// Longest a turn may run before it is stopped and its messages go back to
    /// the inbox (`90s`, `45m`, `2h`); an agent's `turn_timeout` overrides it.
    #[arg(
        long,
        env = "HIVE_TURN_TIMEOUT",
        default_value = "30m",
        value_name = "DURATION",
        value_parser = parse_turn_timeout
    )]
    pub turn_timeout: u64,
    /// The hive's daily budget, every agent's spend together (UTC days), as in
    /// agent.toml: `{ usd_per_day = 50.0, tokens_per_day = 20000000 }` (either or both).
    /// Once spent, every agent is held but the manager's turns on the operator's messages.
    #[arg(
        long,
        env = "HIVE_BUDGET",
        value_name = "TABLE",
        value_parser = parse_budget
    )]
    pub budget: Option<hive_sh4re::config::Budget>,
    /// The dashboard's URL as the operator reaches it (e.g. https://hive.example.org):
    /// webhooks' links are absolute with it, dashboard paths without.
    #[arg(long, env = "HIVE_PUBLIC_URL", value_name = "URL", value_parser = parse_public_url)]
    pub public_url: Option<String>,
    /// Most claude processes (turns, compactions) the hive runs at once; the
    /// other agents wait in line, and one slot is kept for the manager (at least 2).
    /// Default: one per 400 MiB of available memory, at least 2.
    #[arg(
        long,
        env = "HIVE_MAX_CONCURRENT_TURNS",
        value_name = "N",
        value_parser = parse_turn_limit
    )]
    pub max_concurrent_turns: Option<usize>,
    /// This daemon's name in the hive (its node): 1 to 63 characters of a-z, 0-9, '-' and '.'.
    /// New agents make it their home node. Default: this host's name, in lower case.
    #[arg(long, env = "HIVE_NODE", value_name = "NAME")]
    pub node: Option<hive_sh4re::NodeName>,
    /// The PostgreSQL database the nodes of this hive share, a URL without its password
    /// (postgres://USER@HOST:PORT/DB?sslmode=verify-full). The password comes from the config
    /// file (database_password, or the URL there), PGPASSWORD or PGPASSFILE; never a flag.
    /// Default: the sqlite file in the state directory.
    #[arg(long, env = "HIVE_DATABASE", value_name = "URL")]
    pub database: Option<String>,
}

/// A hive budget, written as `agent.toml`'s `budget` is.
fn parse_budget(text: &str) -> std::result::Result<hive_sh4re::config::Budget, String> {
    hive_sh4re::config::Budget::from_toml_inline(text).map_err(|e| e.0)
}

/// The key of `hive.toml` that holds the webhooks: a list of tables, not a flag.
pub const WEBHOOKS_KEY: &str = "webhooks";

/// The key of `hive.toml` that holds the database's password: a file key
/// only, never a flag, where `ps` would show it.
pub const DATABASE_PASSWORD_KEY: &str = "database_password";

/// A public URL: http(s), without a trailing slash.
fn parse_public_url(text: &str) -> std::result::Result<String, String> {
    if !(text.starts_with("http://") || text.starts_with("https://"))
        || text.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{text:?} is not an http:// or https:// URL such as https://hive.example.org"
        ));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// The networks containers may reach: `all`, or a list of them.
fn parse_allow_networks(text: &str) -> std::result::Result<crate::runtime::EgressPolicy, String> {
    crate::runtime::EgressPolicy::parse(text)
}

/// An agent's memory bound: at least 64 MiB (claude alone takes more).
fn parse_agent_memory(text: &str) -> std::result::Result<u64, String> {
    const MIN: u64 = 64 * 1024 * 1024;
    match crate::space::parse_size(text)? {
        n if n >= MIN => Ok(n),
        _ => Err(format!(
            "an agent_memory of {text} is too small for claude to run: give at least 64MiB, or leave it out for a quarter of the host's memory"
        )),
    }
}

/// An agent's CPU cap in cores: at least a tenth of one (claude slower than
/// that times out its own requests).
fn parse_agent_cpus(text: &str) -> std::result::Result<f64, String> {
    match text.trim().parse::<f64>().ok().filter(|n| n.is_finite()) {
        Some(n) if n >= 0.1 => Ok(n),
        Some(_) => Err(format!(
            "an agent_cpus of {text} is too little for claude to run: give at least 0.1 (a tenth of a core), or leave it out for no cap"
        )),
        None => Err(format!(
            "an agent_cpus of {text:?} is not a number of cores: give one such as 1.5"
        )),
    }
}

/// A turn limit: a whole number of at least [`crate::admission::MIN_LIMIT`].
fn parse_turn_limit(text: &str) -> std::result::Result<usize, String> {
    let min = crate::admission::MIN_LIMIT;
    match text.parse::<usize>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(format!(
            "{text} is not a turn limit: give a whole number of at least {min} (one slot is kept for the manager)"
        )),
    }
}

/// A turn time limit in seconds, as `agent.toml`'s `turn_timeout` takes it.
fn parse_turn_timeout(text: &str) -> std::result::Result<u64, String> {
    hive_sh4re::config::TurnTimeout::Text(text.to_owned()).seconds()
}

/// A uid base: a whole, non-zero number of 65536-uid ranges.
fn parse_uid_base(text: &str) -> std::result::Result<u32, String> {
    let base: u32 = text
        .parse()
        .map_err(|_| format!("{text} is not a uid (a whole number below 2^32)"))?;
    crate::runtime::uid_ranges::check(base)?;
    Ok(base)
}

/// Where the settings come from: `--config`, flattened into `serve` and `doctor`.
#[derive(Debug, Clone, Args)]
pub struct ConfigFile {
    /// Read settings from this TOML file (keys: the flags' names with `_`, e.g. inbox_cap)
    /// [default: /etc/hyperhive/hive.toml when it exists].
    #[arg(long, env = "HIVE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag.
    Flag,
    /// An environment variable (its name).
    Env(String),
    /// The config file.
    File,
    /// The built-in default.
    Default,
}

/// One setting as resolved, for `--print-config`.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its key in the file.
    pub key: String,
    /// Its value; None when unset (an option without a default).
    pub value: Option<toml::Value>,
    /// The layer that set it.
    pub origin: Origin,
    /// The flag's help, first line.
    pub help: String,
}

/// The settings after merging every layer.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The settings.
    pub args: ServeArgs,
    /// State and run dirs (`state_dir`, `run_dir` and their defaults).
    pub paths: Paths,
    /// The config file read, if any.
    pub file: Option<PathBuf>,
    /// Every setting with its origin, in the order of `--help`.
    pub entries: Vec<Entry>,
    /// The file's `[[webhooks]]`.
    pub webhooks: Vec<crate::webhooks::Webhook>,
    /// The PostgreSQL database (`database`) with the file's password, if one is set.
    pub database: Option<crate::store::pg::PgSettings>,
}

/// Resolves the settings of the subcommand `argv` names (`serve` or `doctor`)
/// in the grammar `cmd`, reading `default_file` when `--config` is not given
/// and it exists.
pub fn resolve(cmd: &clap::Command, argv: &[OsString], default_file: &Path) -> Result<Resolved> {
    let first = parse(cmd, argv)?;
    let (_, sub) = first
        .subcommand()
        .ok_or_else(|| Error::refused("no subcommand given"))?;
    let file = match sub.try_get_one::<PathBuf>("config").ok().flatten() {
        Some(p) => Some(p.clone()),
        None => default_file.exists().then(|| default_file.to_path_buf()),
    };
    let settings = setting_args(cmd);
    let mut argv = argv.to_vec();
    let mut from_file = BTreeMap::new();
    let mut webhooks = vec![];
    let mut password = None;
    if let Some(path) = &file {
        let (values, hooks, pass) = file_values(path, &settings)?;
        webhooks = hooks;
        password = pass;
        for (key, value, flag) in values {
            let higher = matches!(
                sub.value_source(&key),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            if !higher {
                argv.extend(flag);
                from_file.insert(key, value);
            }
        }
    }
    let merged = parse(cmd, &argv)?;
    let dir = |id: &str| merged.get_one::<PathBuf>(id).cloned();
    let paths = Paths::resolve(dir("state_dir"), dir("run_dir"));
    let (_, sub) = merged.subcommand().expect("parsed above");
    let args = ServeArgs::from_arg_matches(sub).map_err(|e| Error::refused(first_line(&e)))?;
    let entries: Vec<Entry> = settings
        .iter()
        .map(|arg| entry(arg, sub, &from_file, &paths))
        .collect();
    let database = database_settings(&args, &entries, file.as_deref(), password)?;
    Ok(Resolved {
        args,
        paths,
        file,
        entries,
        webhooks,
        database,
    })
}

/// The database's connection settings: refused when a password would be
/// where other users see it (a flag, the environment, a config file that is
/// not private); see docs/postgres.md "How a node connects".
fn database_settings(
    args: &ServeArgs,
    entries: &[Entry],
    file: Option<&Path>,
    password: Option<String>,
) -> Result<Option<crate::store::pg::PgSettings>> {
    let Some(url) = &args.database else {
        if password.is_some() {
            return Err(Error::refused(format!(
                "{DATABASE_PASSWORD_KEY} is set but no database is: give database = \"postgres://...\" too, or remove the password"
            )));
        }
        return Ok(None);
    };
    let mut pg = crate::store::pg::PgSettings::new(url.clone());
    let origin = entries
        .iter()
        .find(|e| e.key == "database")
        .map(|e| e.origin.clone());
    if pg.url_has_password() {
        let place = match origin.clone() {
            Some(Origin::Flag) => {
                Some("on the command line (--database), where ps shows it to every user".to_owned())
            }
            Some(Origin::Env(name)) => Some(format!(
                "in the environment ({name}), which is copied wherever this process's environment goes"
            )),
            _ => None,
        };
        if let Some(place) = place {
            return Err(Error::refused(format!(
                "the database URL {} carries a password {place}: leave it out of the URL and put it in the config file ({DATABASE_PASSWORD_KEY}), PGPASSWORD or a PGPASSFILE",
                crate::store::pg::settings::redact(url)
            )));
        }
    }
    let file_has_password =
        password.is_some() || (origin == Some(Origin::File) && pg.url_has_password());
    if let (true, Some(path)) = (file_has_password, file) {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map(|m| m.permissions().mode())
            .unwrap_or(0);
        if mode & 0o077 != 0 {
            return Err(Error::refused(format!(
                "the config file {} holds the database's password but others may read it (mode {:o}): chmod 600 it",
                path.display(),
                mode & 0o777
            )));
        }
    }
    pg.password = password;
    Ok(Some(pg))
}

/// Parses a command line, turning clap's report into one sentence.
fn parse(cmd: &clap::Command, argv: &[OsString]) -> Result<ArgMatches> {
    cmd.clone()
        .try_get_matches_from(argv)
        .map_err(|e| Error::refused(first_line(&e)))
}

fn first_line(e: &clap::Error) -> String {
    let s = e.to_string();
    let line = s.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// The table of settings: the global options of `cmd`, then [`ServeArgs`].
fn setting_args(cmd: &clap::Command) -> Vec<Arg> {
    let serve = ServeArgs::augment_args(clap::Command::new("serve"));
    cmd.get_arguments()
        .filter(|a| a.is_global_set())
        .chain(serve.get_arguments())
        .filter(|a| a.get_long().is_some())
        .cloned()
        .collect()
}

/// A file setting: key, value, and the flag that sets it.
type FileValue = (String, toml::Value, Vec<OsString>);

/// The file's settings, each checked by its flag's parser, its webhooks and
/// the database's password.
fn file_values(
    path: &Path,
    settings: &[Arg],
) -> Result<(
    Vec<FileValue>,
    Vec<crate::webhooks::Webhook>,
    Option<String>,
)> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::refused(format!(
            "could not read the config file {shown}: {e}; fix it, or point --config elsewhere"
        ))
    })?;
    // The error's message and place only: its display quotes the line, which
    // may be the database password's.
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        let at = e.span().map_or_else(String::new, |s| {
            let before = text.get(..s.start).unwrap_or(&text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(" (line {line}, column {column})")
        });
        Error::refused(format!(
            "the config file {shown} is not valid TOML{at}: {}",
            e.message().trim().replace('\n', " ")
        ))
    })?;
    let mut out = Vec::new();
    let mut webhooks = vec![];
    let mut password = None;
    for (key, value) in table {
        if key == WEBHOOKS_KEY {
            webhooks = crate::webhooks::parse(&value)
                .map_err(|e| Error::refused(format!("{shown}: {e}")))?;
            continue;
        }
        if key == DATABASE_PASSWORD_KEY {
            let toml::Value::String(p) = value else {
                return Err(Error::refused(format!(
                    "key `{key}` in {shown} takes a string, not a {}",
                    value.type_str()
                )));
            };
            password = Some(p);
            continue;
        }
        let Some(arg) = settings.iter().find(|a| a.get_id() == key.as_str()) else {
            let known: Vec<&str> = settings
                .iter()
                .map(|a| a.get_id().as_str())
                .chain([WEBHOOKS_KEY, DATABASE_PASSWORD_KEY])
                .collect();
            return Err(Error::refused(format!(
                "unknown key `{key}` in {shown}; the keys are {}",
                known.join(", ")
            )));
        };
        let long = arg.get_long().expect("settings have a long flag");
        let wrong = |want: &str| {
            Error::refused(format!(
                "key `{key}` in {shown} takes {want}, not a {}",
                value.type_str()
            ))
        };
        let flag: Vec<OsString> = if matches!(arg.get_action(), ArgAction::SetTrue) {
            match value {
                toml::Value::Boolean(true) => vec![format!("--{long}").into()],
                toml::Value::Boolean(false) => vec![],
                _ => return Err(wrong("true or false")),
            }
        } else {
            let text = match &value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(f) => f.to_string(),
                // A table (the budget) goes to its flag as inline TOML, parsed by its flag's parser.
                toml::Value::Table(t) => toml::Value::Table(t.clone()).to_string(),
                _ => return Err(wrong("a string or a number")),
            };
            let flag = OsString::from(format!("--{long}={text}"));
            // The flag's own parser, alone, so the error names the file's key.
            clap::Command::new("hive.toml")
                .no_binary_name(true)
                .arg(arg.clone().global(false))
                .try_get_matches_from([&flag])
                .map_err(|e| {
                    Error::refused(format!("key `{key}` in {shown}: {}", first_line(&e)))
                })?;
            vec![flag]
        };
        out.push((key, value, flag));
    }
    Ok((out, webhooks, password))
}

fn entry(
    arg: &Arg,
    m: &ArgMatches,
    from_file: &BTreeMap<String, toml::Value>,
    paths: &Paths,
) -> Entry {
    let key = arg.get_id().as_str().to_owned();
    let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
    // The first sentence is enough beside a value.
    let help = help
        .split([':', '.', '['])
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let origin = if from_file.contains_key(&key) {
        Origin::File
    } else {
        match m.value_source(&key) {
            Some(ValueSource::CommandLine) => Origin::Flag,
            Some(ValueSource::EnvVariable) => Origin::Env(
                arg.get_env()
                    .map(|e| e.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            _ => Origin::Default,
        }
    };
    let value = match key.as_str() {
        // Their defaults depend on who runs: show what Paths chose.
        "state_dir" => Some(paths.state.display().to_string().into()),
        "run_dir" => Some(paths.run.display().to_string().into()),
        _ if matches!(arg.get_action(), ArgAction::SetTrue) => {
            Some(toml::Value::Boolean(m.get_flag(&key)))
        }
        // The URL as it is, but never a password in it.
        "database" => m
            .get_one::<String>(&key)
            .map(|u| crate::store::pg::settings::redact(u).into()),
        _ => m.get_raw(&key).and_then(|mut v| v.next()).map(raw_value),
    };
    Entry {
        key,
        value,
        origin,
        help,
    }
}

/// A raw value as TOML: a whole number unquoted, anything else a string.
fn raw_value(raw: &OsStr) -> toml::Value {
    let s = raw.to_string_lossy();
    match s.parse::<i64>() {
        Ok(n) => toml::Value::Integer(n),
        Err(_) => toml::Value::String(s.into_owned()),
    }
}

impl Resolved {
    /// What `serve --print-config` prints: a valid `hive.toml` with each setting's origin.
    pub fn render(&self) -> String {
        let file = self
            .file
            .as_ref()
            .map(|f| f.display().to_string())
            .unwrap_or_else(|| format!("no config file ({DEFAULT_CONFIG} does not exist)"));
        let mut out = format!(
            "# hive-c0re serve settings: flags over environment over the config file over defaults\n\
             # config file: {file}\n"
        );
        let lines: Vec<(String, String)> = self
            .entries
            .iter()
            .map(|e| {
                let line = match &e.value {
                    Some(v) => format!("{} = {v}", e.key),
                    None => format!("# {} is unset", e.key),
                };
                let origin = match &e.origin {
                    Origin::Flag => "flag".to_owned(),
                    Origin::Env(name) => format!("env {name}"),
                    Origin::File => "file".to_owned(),
                    Origin::Default => "default".to_owned(),
                };
                (line, format!("# {origin}: {}", e.help))
            })
            .collect();
        let width = lines.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        for (line, comment) in lines {
            out.push_str(&format!("{line:<width$}  {comment}\n"));
        }
        if !self.webhooks.is_empty() {
            let names: Vec<&str> = self.webhooks.iter().map(|w| w.name.as_str()).collect();
            out.push_str(&format!(
                "# webhooks: {} (their [[webhooks]] tables are the file's, not repeated here)\n",
                names.join(", ")
            ));
        }
        out
    }

    /// The origin of one setting.
    pub fn origin(&self, key: &str) -> Origin {
        self.entries
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.origin.clone())
            .unwrap_or(Origin::Default)
    }

    /// The dashboard's address, or None: `no_dashboard` turns it off unless
    /// `dashboard` comes from a higher layer (a flag over the file's `no_dashboard`).
    pub fn dashboard(&self) -> Option<&str> {
        let rank = |o: Origin| match o {
            Origin::Flag => 3,
            Origin::Env(_) => 2,
            Origin::File => 1,
            Origin::Default => 0,
        };
        let on = !self.args.no_dashboard
            || rank(self.origin("dashboard")) > rank(self.origin("no_dashboard"));
        on.then_some(self.args.dashboard.as_str())
    }

    /// What `serve` runs with.
    pub fn serve_options(&self) -> ServeOptions {
        let a = &self.args;
        ServeOptions {
            paths: self.paths.clone(),
            runtime: a.runtime,
            dashboard: self.dashboard().map(str::to_owned),
            no_manager: a.no_manager,
            node: a.node.clone(),
            database: self.database.clone(),
            limits: Limits {
                inbox_cap: a.inbox_cap,
                events_keep: a.events_keep,
                events_keep_bytes: a.events_keep_mib.saturating_mul(1024 * 1024),
                delivered_keep: a.delivered_keep,
                stats_keep: a.stats_keep,
                max_age_ms: (a.history_days as i64) * 24 * 3600 * 1000,
                ..Limits::default()
            },
            vacuum_every: Duration::from_secs(a.vacuum_secs.max(1)),
            uid_base: a.uid_base,
            turn_timeout: Duration::from_secs(a.turn_timeout),
            budget: a.budget,
            notify: Default::default(),
            min_free_space: a.min_free_space,
            state_quota: a.state_quota,
            bounds: crate::runtime::ContainerBounds {
                agent_memory: a.agent_memory,
                agent_cpus: a.agent_cpus,
                egress: a.allow_networks.clone().unwrap_or_default(),
            },
            webhooks: crate::webhooks::Webhooks {
                hooks: self.webhooks.clone(),
                public_url: a.public_url.clone(),
            },
            max_concurrent_turns: a.max_concurrent_turns.map(|n| {
                let from = match self.origin("max_concurrent_turns") {
                    Origin::Flag => "--max-concurrent-turns".to_owned(),
                    Origin::Env(name) => name,
                    Origin::File => format!(
                        "max_concurrent_turns in {}",
                        self.file.as_deref().unwrap_or(Path::new("?")).display()
                    ),
                    Origin::Default => "default".to_owned(),
                };
                (n, from)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// The settings as `hive-c0re` itself resolves them: in the CLI's grammar.
    fn resolve(argv: &[OsString], default_file: &Path) -> Result<Resolved> {
        super::resolve(&crate::cli::Cli::command(), argv, default_file)
    }

    fn argv(args: &[&str]) -> Vec<OsString> {
        std::iter::once("hive-c0re")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect()
    }

    #[test]
    fn every_setting_has_a_flag_an_env_and_a_help_named_after_its_key() {
        let cmd = crate::cli::Cli::command();
        let settings = setting_args(&cmd);
        assert!(settings.len() >= 11, "{settings:?}");
        for a in &settings {
            let key = a.get_id().as_str();
            assert_eq!(
                a.get_long(),
                Some(key.replace('_', "-").as_str()),
                "the flag of `{key}`"
            );
            assert_eq!(
                a.get_env().map(|e| e.to_string_lossy().into_owned()),
                Some(format!("HIVE_{}", key.to_uppercase())),
                "`{key}` needs env = \"HIVE_{}\"",
                key.to_uppercase()
            );
            assert!(a.get_help().is_some(), "`{key}` needs a doc comment");
        }
    }

    #[test]
    fn without_a_file_the_defaults_hold() {
        let r = resolve(&argv(&["serve"]), Path::new("/nonexistent/hive.toml")).unwrap();
        assert!(r.file.is_none());
        assert_eq!(r.args.inbox_cap, 10_000);
        assert_eq!(r.origin("inbox_cap"), Origin::Default);
        assert_eq!(r.dashboard(), Some("127.0.0.1:7878"));
    }

    #[test]
    fn the_default_file_is_read_when_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("hive.toml");
        std::fs::write(
            &f,
            "inbox_cap = 7\nno_manager = true\nruntime = \"process\"\nagent_cpus = 1.5\n",
        )
        .unwrap();
        let r = resolve(&argv(&["serve"]), &f).unwrap();
        assert_eq!(r.file.as_deref(), Some(f.as_path()));
        assert_eq!(r.args.inbox_cap, 7);
        assert_eq!(r.args.agent_cpus, Some(1.5));
        assert!(r.args.no_manager);
        assert_eq!(r.args.runtime, Some(RuntimeKind::Process));
        assert_eq!(r.origin("runtime"), Origin::File);
    }

    #[test]
    fn a_flag_beats_the_file_and_a_flag_dashboard_beats_a_file_no_dashboard() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("hive.toml");
        std::fs::write(&f, "inbox_cap = 7\nno_dashboard = true\n").unwrap();
        let r = resolve(
            &argv(&["serve", "--inbox-cap", "9", "--dashboard", "127.0.0.1:0"]),
            &f,
        )
        .unwrap();
        assert_eq!(r.args.inbox_cap, 9);
        assert_eq!(r.origin("inbox_cap"), Origin::Flag);
        assert_eq!(r.dashboard(), Some("127.0.0.1:0"));
        let r = resolve(&argv(&["serve"]), &f).unwrap();
        assert_eq!(r.dashboard(), None);
    }

    #[test]
    fn the_hive_budget_is_a_table_as_in_agent_toml() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("hive.toml");
        std::fs::write(
            &f,
            "budget = { usd_per_day = 50.0, tokens_per_day = 2_000_000 }\n",
        )
        .unwrap();
        let r = resolve(&argv(&["serve"]), &f).unwrap();
        let b = r.args.budget.unwrap();
        assert_eq!((b.usd_per_day, b.tokens()), (Some(50.0), Some(2_000_000)));
        assert_eq!(r.origin("budget"), Origin::File);
        // What --print-config prints reads back as the same budget.
        let printed = dir.path().join("printed.toml");
        std::fs::write(&printed, r.render()).unwrap();
        let again = resolve(&argv(&["serve"]), &printed).unwrap();
        assert_eq!(again.args.budget, Some(b));
        for (bad, want) in [
            ("budget = { usd_per_day = -5.0 }", "budget.usd_per_day"),
            ("budget = { tokens_per_day = 0 }", "budget.tokens_per_day"),
            ("budget = { usd_per_day = nan }", "budget.usd_per_day"),
            ("budget = { dollars = 5.0 }", "dollars"),
        ] {
            std::fs::write(&f, bad).unwrap();
            let e = resolve(&argv(&["serve"]), &f).unwrap_err().to_string();
            assert!(e.contains("key `budget`") && e.contains(want), "{bad}: {e}");
        }
    }

    /// A typo on the password's line (an unterminated string) is told by
    /// its place: the TOML error's display quotes the line, password and all,
    /// into serve's stderr and the journal.
    #[test]
    fn a_typo_in_the_config_file_is_told_without_its_line() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("hive.toml");
        std::fs::write(
            &f,
            "runtime = \"process\"\ndatabase_password = \"Sup3r-S3cret-PW\n",
        )
        .unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = resolve(&argv(&["serve"]), &f).unwrap_err().to_string();
        assert!(e.contains("not valid TOML (line 2, column"), "{e}");
        assert!(!e.contains("Sup3r"), "{e}");
    }

    #[test]
    fn a_database_password_never_comes_from_a_flag_or_a_file_others_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("hive.toml");
        let none = Path::new("/nonexistent/hive.toml");
        let with_password = "postgres://node:s3cret@db.example.org/hive";
        let e = resolve(&argv(&["serve", "--database", with_password]), none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("command line"), "{e}");
        assert!(e.contains("node:<hidden>@db.example.org/hive"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        let r = resolve(&argv(&["serve"]), none).unwrap();
        assert!(r.database.is_none(), "the sqlite file without --database");

        let private = |text: &str, mode: u32| {
            std::fs::write(&f, text).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        private("database_password = \"s3cret\"\n", 0o600);
        let r = resolve(
            &argv(&["serve", "--database", "postgres://node@db.example.org/hive"]),
            &f,
        )
        .unwrap();
        let pg = r.database.clone().unwrap();
        assert_eq!(pg.password.as_deref(), Some("s3cret"));
        assert!(!r.render().contains("s3cret"), "{}", r.render());
        assert!(!format!("{pg:?}").contains("s3cret"));

        private(&format!("database = \"{with_password}\"\n"), 0o600);
        let r = resolve(&argv(&["serve"]), &f).unwrap();
        assert!(
            r.database.as_ref().unwrap().url_has_password(),
            "a private file may hold the URL whole"
        );
        assert!(!r.render().contains("s3cret"), "{}", r.render());

        for text in [
            format!("database = \"{with_password}\"\n"),
            "database = \"postgres://node@db/hive\"\ndatabase_password = \"s3cret\"\n".to_owned(),
        ] {
            private(&text, 0o644);
            let e = resolve(&argv(&["serve"]), &f).unwrap_err().to_string();
            assert!(e.contains("chmod 600"), "{e}");
        }
    }

    #[test]
    fn bad_values_name_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("hive.toml");
        for (toml, want) in [
            ("inbox_cap = \"lots\"", "key `inbox_cap`"),
            ("inbox_cap = -1", "key `inbox_cap`"),
            ("no_manager = \"yes\"", "takes true or false"),
            ("runtime = \"docker\"", "key `runtime`"),
            ("uid_base = 70000", "not a multiple of 65536"),
            ("uid_base = 0", "key `uid_base`"),
            ("max_concurrent_turns = 1", "at least 2"),
            ("state_quota = \"0MiB\"", "would stop every agent"),
            ("state_quota = \"lots\"", "is not a size"),
            ("agent_memory = \"32MiB\"", "too small for claude"),
            ("agent_cpus = \"lots\"", "not a number of cores"),
            ("agent_cpus = \"inf\"", "not a number of cores"),
            ("agent_cpus = 0.01", "too little for claude"),
            ("allow_networks = \"lan\"", "such as 10.1.2.0/24"),
            ("dashboard = [1]", "takes a string or a number"),
            ("inbox-cap = 1", "unknown key `inbox-cap`"),
            ("config = \"x\"", "unknown key `config`"),
            ("[serve]\ninbox_cap = 1", "unknown key `serve`"),
            ("inbox_cap = ", "not valid TOML (line 1"),
        ] {
            std::fs::write(&f, toml).unwrap();
            let e = resolve(&argv(&["serve"]), &f).unwrap_err().to_string();
            assert!(e.contains(want), "{toml:?}: {e}");
            assert!(e.contains(&f.display().to_string()), "{toml:?}: {e}");
        }
    }

    #[test]
    fn a_state_quota_is_a_size_or_none() {
        use crate::hive::quota::StateQuota;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("hive.toml");
        for (toml, want) in [
            ("state_quota = \"none\"", Some(StateQuota::Off)),
            ("state_quota = \"2GiB\"", Some(StateQuota::Bytes(2 << 30))),
            ("", None),
        ] {
            std::fs::write(&f, toml).unwrap();
            let r = resolve(&argv(&["serve"]), &f).unwrap();
            assert_eq!(r.args.state_quota, want, "{toml:?}");
        }
    }

    #[test]
    fn print_config_is_a_config_file_that_resolves_to_the_same_settings() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("hive.toml");
        std::fs::write(&f, "events_keep = 12\nruntime = \"process\"\n").unwrap();
        let state = dir.path().join("state");
        let state = state.to_str().unwrap();
        let r = resolve(
            &argv(&["--state-dir", state, "serve", "--history-days", "3"]),
            &f,
        )
        .unwrap();
        let text = r.render();
        assert!(text.contains("events_keep = 12"), "{text}");
        assert!(text.contains("# file:"), "{text}");
        assert!(text.contains("# flag:"), "{text}");
        let again = dir.path().join("again.toml");
        std::fs::write(&again, &text).unwrap();
        let r2 = resolve(&argv(&["serve"]), &again).unwrap();
        assert_eq!(r2.args.events_keep, 12);
        assert_eq!(r2.args.history_days, 3);
        assert_eq!(r2.args.runtime, Some(RuntimeKind::Process));
        assert_eq!(r2.paths.state, Path::new(state));
    }
}
