//! The hive's limits, defined once: hive-c0re enforces them, the MCP tools
//! check them before asking (so a model hears the limit in the tool's own
//! words), and both name them in their refusals.

/// Largest request line either socket accepts, in bytes.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Largest message body `send` (and a scheduled prompt's text) accepts, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest key a send may carry to be stored once when repeated.
pub const MAX_SEND_KEY_BYTES: usize = 64;

/// Shortest nap, in seconds.
pub const NAP_MIN_SECONDS: u64 = 1;
/// Longest nap, in seconds (6 h).
pub const NAP_MAX_SECONDS: u64 = 6 * 3600;

/// Most messages one `recv` returns.
pub const RECV_MAX: u32 = 1000;
/// Most bytes of bodies one `recv` returns (the first message whatever its
/// size): a thousand bodies at the size cap, written out as JSON, would be
/// hundreds of MiB held for one answer. The rest wait for the next `recv`.
pub const RECV_MAX_BYTES: usize = 1024 * 1024;
/// Messages an agent's `recv` returns when it names no `max`.
pub const RECV_DEFAULT: u32 = 20;

/// Longest one-line status an agent may set, in characters.
pub const STATUS_MAX_CHARS: usize = 200;

/// How long an operator question waits when the manager names no deadline, in seconds.
pub const ASK_DEFAULT_TTL_SECONDS: u64 = 3600;
/// Longest an operator question may wait, in seconds (7 days).
pub const ASK_MAX_TTL_SECONDS: u64 = 7 * 24 * 3600;

/// Longest question the manager may ask the operator, in bytes.
pub const QUESTION_MAX_BYTES: usize = 8 * 1024;
/// Most suggested answers one question carries.
pub const QUESTION_OPTIONS_MAX: usize = 10;
/// Longest suggested answer, in characters.
pub const OPTION_MAX_CHARS: usize = 200;
/// Most questions the manager may ask the operator a minute: each is a
/// notification, and a short deadline could otherwise ask without end.
pub const QUESTIONS_PER_MINUTE: u32 = 10;
/// Longest description of an approval (why the manager asks), in bytes.
pub const DESCRIPTION_MAX_BYTES: usize = 4 * 1024;

/// Checks a question to the operator and its suggested answers (trimmed):
/// the sentence to answer with when they are not fit to ask.
pub fn check_question(question: &str, options: &[String]) -> Result<(), String> {
    if question.is_empty() {
        return Err("the question is empty: say what you need the operator to decide".into());
    }
    if question.len() > QUESTION_MAX_BYTES {
        return Err(format!(
            "the question is {} bytes, over the limit of {QUESTION_MAX_BYTES}: ask it shorter and point to a file for the details",
            question.len()
        ));
    }
    if options.len() > QUESTION_OPTIONS_MAX {
        return Err(format!(
            "{} options, more than the {QUESTION_OPTIONS_MAX} a question may suggest: keep the likeliest answers",
            options.len()
        ));
    }
    if options.iter().any(String::is_empty) {
        return Err(
            "an option is empty: give each suggested answer some text, or leave options out".into(),
        );
    }
    if options.iter().any(|o| o.chars().count() > OPTION_MAX_CHARS) {
        return Err(format!(
            "an option is over {OPTION_MAX_CHARS} characters: a suggested answer is short, the question carries the detail"
        ));
    }
    Ok(())
}

/// Checks an approval's description: the sentence to answer with when it is too long.
pub fn check_description(description: &str) -> Result<(), String> {
    if description.len() > DESCRIPTION_MAX_BYTES {
        return Err(format!(
            "the description is {} bytes, over the limit of {DESCRIPTION_MAX_BYTES}: say why in short and put the details in the commit message",
            description.len()
        ));
    }
    Ok(())
}

/// Most approvals that may wait at once for the manager to queue another:
/// each costs the operator's attention and every listing's work.
pub const PENDING_APPROVALS_MAX: u64 = 100;

/// The figures a harness may report outside a turn (`stats`): a
/// compaction's spending and its notes' size around a rotation.
pub const HARNESS_STATS_KEYS: [&str; 5] = [
    "tokens.in",
    "tokens.out",
    "cost.usd",
    "notes.before_bytes",
    "notes.after_bytes",
];
/// Most dollars one report of spending (a turn's, a compaction's) counts for.
pub const REPORTED_USD_MAX: f64 = 1000.0;
/// Largest figure of any other kind one report carries (tokens, bytes).
pub const REPORTED_FIGURE_MAX: f64 = 1e12;
/// Most `stats` reports one agent makes a minute (a harness makes one per compaction).
pub const STATS_PER_MINUTE: u32 = 30;
/// Most turns one agent begins a minute: a claude process takes a second or
/// more to start, so only a harness that runs none (and ends each turn at
/// once, its messages released to claim again) comes near it. Past it the
/// next turn waits, so such a loop cannot write the store at full speed.
pub const TURNS_PER_MINUTE: u32 = 120;
/// Most tools one turn's figures count calls of (`tool.NAME` rows).
pub const TURN_TOOLS_MAX: usize = 64;
/// Longest tool name a turn's figures keep, in characters.
pub const TOOL_NAME_MAX_CHARS: usize = 128;
/// Longest claude session id a turn's end may name, in bytes (claude's are UUIDs).
pub const SESSION_ID_MAX_BYTES: usize = 128;
/// Longest reason a failed turn's figures keep, in characters.
pub const TURN_ERROR_MAX_CHARS: usize = 4000;

/// Most `set_status` lines an agent may set a minute: each one is a write,
/// and a wake every other node reads the agent again for.
pub const STATUS_PER_MINUTE: u32 = 60;
/// Most naps an agent may take a minute: each one is a synced write of its
/// row, and a wake every node reads the agent again for.
pub const NAPS_PER_MINUTE: u32 = 60;
/// Most `request_init_config`, `request_spawn` and `request_apply_commit`
/// calls the manager may make a minute: each runs git as root on its repos.
/// Above [`PENDING_APPROVALS_MAX`], so the manager may fill its queue at once.
pub const MANAGER_REQUESTS_PER_MINUTE: u32 = 120;
/// Most bytes of messages one agent may send a minute, each message counted
/// as at least [`SEND_MIN_BYTES`]: every inbox it may write to holds up to
/// its cap of them, and a sender that sent to itself and read without pause
/// wrote gigabytes a minute between vacuums.
pub const SEND_BYTES_PER_MINUTE: u64 = 16 * 1024 * 1024;
/// What a message counts as, at least, against [`SEND_BYTES_PER_MINUTE`]:
/// its row's cost whatever its body.
pub const SEND_MIN_BYTES: usize = 256;

/// Most requests one agent's connections to its socket make a minute
/// together, whatever they ask, at once or spread (a bucket that fills
/// evenly over the minute). A reader costs as much as a writer: one agent
/// asking `status` without pause (every agent's row, each time) kept a core
/// busy and slowed the operator's own commands. A harness in the end-to-end
/// tests, its model scripted and faster than any real one, made at most 35
/// a second and 70 a minute; past the bound a request waits its turn (one a
/// twentieth of a second), so it is slowed, never refused, and no harness
/// fails on it.
/// Above every bound of one kind of request, so those are still reached.
pub const REQUESTS_PER_MINUTE: u32 = 1200;

/// Most reports of its state (`state`, `api_retry`, `backoff`) an agent's
/// harness has recorded a minute: a turn makes a few, and each is two writes.
pub const STATE_REPORTS_PER_MINUTE: u32 = 600;
/// Most bytes of history (event payloads) one agent's harness has stored a
/// minute: claude's busiest turns write a few; past it the rest of the minute's
/// are dropped (and the drop noted once), so one agent cannot fill the disk.
pub const HISTORY_BYTES_PER_MINUTE: u64 = 16 * 1024 * 1024;

/// Most schedules waiting for one agent.
pub const SCHEDULES_PER_AGENT: u32 = 50;
/// Most schedules one creator (the operator, the manager) keeps at once.
pub const SCHEDULES_PER_CREATOR: u32 = 200;
/// Shortest repeat interval of a schedule, in milliseconds.
pub const SCHEDULE_MIN_INTERVAL_MS: i64 = 1000;
