//! The one place that runs claude for the agent: a turn, `/compact` and notes
//! compaction all go through [`Job::run`], which starts claude, makes it the
//! running process (so the operator's cancel reaches it), forwards its output
//! to hive-c0re as events and tallies it.
//!
//! A [`Job`] is one piece of work that may run claude several times (a turn
//! that compacts and retries); jobs never overlap, and a cancel ends the
//! whole job, not just the process running at that moment. So does its time
//! limit ([`Job::limit`]), which does not run while an operator question
//! waits for its answer.
//!
//! A turn's `api_retry` lines are reported to hive-c0re as they come (the
//! agent shows `retrying`); when it answers `give_up` (a refused credential,
//! or the hive backing off from a failing API) the job ends at once.

use std::sync::Mutex;
use std::time::Duration;

use hive_sh4re::AgentState;
use hive_sh4re::agent::{AgentRequest, EventIn};
use hive_sh4re::event::Payload;
use hive_sh4re::limits::MAX_LINE_BYTES;
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::claude::{self, ApiRetry, Invocation, Output, Tally};
use crate::client::{Client, ClientError};

/// Most events sent in one request.
const EVENT_BATCH: usize = 256;
/// How long after claude exits its output is still read: a process it
/// started that took its stdout or stderr along (`setsid cmd &`) would
/// otherwise keep the turn from ending for as long as it lives.
const OUTPUT_DRAIN: Duration = Duration::from_secs(10);

/// Runs claude one job at a time and lets a cancel reach the running job.
#[derive(Default)]
pub struct Runner {
    /// Held for the length of a job, so jobs never overlap.
    exclusive: tokio::sync::Mutex<()>,
    current: Mutex<Current>,
}

/// The job under way, as the control task sees it.
#[derive(Default)]
struct Current {
    active: bool,
    cancelled: bool,
    /// Process group of the claude running now.
    pid: Option<Pid>,
    /// When the job's time is up, unless an operator question stops the clock.
    deadline: Option<Instant>,
    /// The time left while the clock stands, and the question it waits for.
    paused: Option<(String, Duration)>,
    timed_out: bool,
    /// The hive told the job to give up after this API failure.
    gave_up: Option<(Option<u16>, String)>,
    /// The job holds its turn's slot (`next_turn` gave it): its runs ask for none.
    in_turn: bool,
}

/// The tool whose wait for the operator does not count against a turn's time limit.
const ASK_OPERATOR: &str = "mcp__hyperhive__ask_operator";

/// One job: held while it runs; ends when dropped.
pub struct Job<'a> {
    runner: &'a Runner,
    _exclusive: tokio::sync::MutexGuard<'a, ()>,
}

/// Whose output a run forwards, which names its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// A turn: `stream` and `stderr`.
    Turn,
    /// `/compact`: `compact_stream` and `compact_stderr`.
    Compact,
    /// Notes compaction: `notes_compaction_stream`.
    Notes,
}

/// How one claude process ended.
#[derive(Debug, Default)]
pub struct Run {
    /// Its exit code; None when killed by a signal or never started.
    pub exit: Option<i32>,
    pub tally: Tally,
    /// Why claude could not be started, if it could not.
    pub spawn_error: Option<String>,
}

impl Run {
    /// True when claude ran to the end without an error.
    pub fn ok(&self) -> bool {
        self.exit == Some(0) && !self.tally.is_error && self.spawn_error.is_none()
    }

    /// Takes a retry's outcome, adding its figures to this run's.
    pub fn retried(&mut self, again: Run) {
        self.tally.merge(again.tally);
        self.exit = again.exit;
        self.spawn_error = again.spawn_error;
    }
}

/// A run's spending as `stats` items (`tokens.in`, `tokens.out`, `cost.usd`):
/// what a run outside a turn reports, so the agent's budget counts it.
fn usage_items(t: &Tally) -> Vec<(String, f64)> {
    let mut items = vec![];
    items.extend(t.input_tokens.map(|v| ("tokens.in".to_owned(), v as f64)));
    items.extend(t.output_tokens.map(|v| ("tokens.out".to_owned(), v as f64)));
    items.extend(t.cost_usd.map(|v| ("cost.usd".to_owned(), v)));
    items
}

impl Runner {
    /// Waits for the job under way to end, then begins one.
    pub async fn begin(&self) -> Job<'_> {
        let guard = self.exclusive.lock().await;
        *self.lock() = Current {
            active: true,
            ..Current::default()
        };
        Job {
            runner: self,
            _exclusive: guard,
        }
    }

    /// Cancels the job under way, killing the claude it runs; false when there is none.
    pub fn cancel(&self) -> bool {
        let pid = {
            let mut cur = self.lock();
            if !cur.active {
                return false;
            }
            cur.cancelled = true;
            cur.pid
        };
        if let Some(pid) = pid {
            tokio::spawn(claude::terminate(pid));
        }
        true
    }

    /// Ends the running claude (the harness is stopping).
    pub async fn stop(&self) {
        let pid = self.lock().pid;
        if let Some(pid) = pid {
            claude::terminate(pid).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Job<'_> {
    /// True once the operator cancelled this job.
    pub fn cancelled(&self) -> bool {
        self.runner.lock().cancelled
    }

    /// Ends the job (its claude and every run after) once it ran for `limit`.
    pub fn limit(&self, limit: Duration) {
        self.runner.lock().deadline = Some(Instant::now() + limit);
    }

    /// Says whether the job runs inside a turn, whose slot `next_turn` gave
    /// (until `turn_end`); outside one each run waits for a slot of its own.
    pub fn in_turn(&self, yes: bool) {
        self.runner.lock().in_turn = yes;
    }

    /// True once the job ran over its time limit.
    pub fn timed_out(&self) -> bool {
        self.runner.lock().timed_out
    }

    /// The API failure the hive told the job to give up on, if it did.
    pub fn gave_up(&self) -> Option<(Option<u16>, String)> {
        self.runner.lock().gave_up.clone()
    }

    /// True when no more claude runs: cancelled, out of time, or given up.
    pub fn ended(&self) -> bool {
        let cur = self.runner.lock();
        cur.cancelled || cur.timed_out || cur.gave_up.is_some()
    }

    /// Stops or restarts the clock around an operator question (its tool call and result).
    fn clock(&self, o: &Output) {
        let Output::Stream(v) = o else { return };
        let blocks = v.pointer("/message/content").and_then(|c| c.as_array());
        let mut cur = self.runner.lock();
        for b in blocks.into_iter().flatten() {
            match b.get("type").and_then(|t| t.as_str()) {
                Some("tool_use")
                    if b.get("name").and_then(|n| n.as_str()) == Some(ASK_OPERATOR) =>
                {
                    if let (Some(d), Some(id)) =
                        (cur.deadline, b.get("id").and_then(|i| i.as_str()))
                    {
                        let left = d.saturating_duration_since(Instant::now());
                        cur.paused = Some((id.to_owned(), left));
                        cur.deadline = None;
                    }
                }
                Some("tool_result") => {
                    let id = b.get("tool_use_id").and_then(|i| i.as_str());
                    if let Some((_, left)) = cur.paused.take_if(|(q, _)| Some(q.as_str()) == id) {
                        cur.deadline = Some(Instant::now() + left);
                    }
                }
                _ => {}
            }
        }
    }

    /// Runs claude once: outside a turn, first waits for a turn slot
    /// (`admit`; a cancel meanwhile ends the wait, and the run), and gives it
    /// back after, having reported what the run spent: hive-c0re takes spend
    /// only from a run that holds a slot. A turn's runs spend within the
    /// turn, which reports it all with its `turn_end`. Then as
    /// [`Job::run_admitted`].
    pub async fn run(
        &self,
        c: &mut Client,
        inv: &Invocation,
        stream: Stream,
        announce: &[AgentRequest],
    ) -> Result<Run, ClientError> {
        let admitted = !self.runner.lock().in_turn && self.admit(c).await?;
        let out = self.run_admitted(c, inv, stream, announce).await?;
        if admitted {
            let usage = usage_items(&out.tally);
            if !usage.is_empty() {
                c.call(&AgentRequest::Stats { items: usage }).await?;
            }
            c.call(&AgentRequest::Release).await?;
        }
        Ok(out)
    }

    /// Waits for a turn slot until one is given (true) or the job ended (false).
    async fn admit(&self, c: &mut Client) -> Result<bool, ClientError> {
        while !self.ended() {
            // hive-c0re answers early when the inbox is poked (a cancel among others).
            if c.call(&AgentRequest::Admit { wait_ms: None })
                .await?
                .admitted
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Runs claude once: sends `announce` as soon as claude is starting (so
    /// the round trips overlap its start-up), then forwards every output line
    /// as an event until claude exited and its pipes are drained.
    async fn run_admitted(
        &self,
        c: &mut Client,
        inv: &Invocation,
        stream: Stream,
        announce: &[AgentRequest],
    ) -> Result<Run, ClientError> {
        let mut out = Run::default();
        let (tx, mut rx) = mpsc::channel::<Output>(1024);
        // Not started at all once cancelled: a cancel between two runs of a job ends it.
        let spawned = if self.ended() {
            Err(std::io::Error::other("the turn was ended"))
        } else {
            inv.spawn(tx).await
        };
        if let Ok(r) = &spawned {
            let cancelled = {
                let mut cur = self.runner.lock();
                cur.pid = r.pid();
                cur.cancelled
            };
            // A cancel that came while claude was starting found no process to end.
            if let (true, Some(pid)) = (cancelled, r.pid()) {
                tokio::spawn(claude::terminate(pid));
            }
        }
        for req in announce {
            match req {
                AgentRequest::Events { items } => send_events(c, items.clone()).await?,
                other => drop(c.call(other).await?),
            }
        }
        let mut running = match spawned {
            Ok(r) => r,
            Err(e) => {
                out.spawn_error = Some(e.to_string());
                return Ok(out);
            }
        };
        let mut exited = false;
        let mut retrying = false;
        let mut drained_by: Option<Instant> = None;
        loop {
            let deadline = self.runner.lock().deadline;
            tokio::select! {
                first = rx.recv() => {
                    let Some(first) = first else { break };
                    let mut batch = vec![first];
                    while batch.len() < EVENT_BATCH {
                        match rx.try_recv() { Ok(o) => batch.push(o), Err(_) => break }
                    }
                    let mut retry = None;
                    let mut answered = false;
                    let items = batch.into_iter().map(|o| {
                        out.tally.observe(&o);
                        self.clock(&o);
                        match ApiRetry::of(&o) {
                            Some(r) => retry = Some(r),
                            None => answered |= retry.is_none() && matches!(o, Output::Stream(_)),
                        }
                        stream.event(o)
                    }).collect();
                    send_events(c, items).await?;
                    if stream != Stream::Turn {
                        continue;
                    }
                    if retrying && answered {
                        // The API answers again: the turn goes on.
                        retrying = false;
                        c.call(&AgentRequest::State { state: AgentState::Thinking, model: None }).await?;
                    }
                    if let Some(r) = retry {
                        retrying = true;
                        self.report_retry(c, r, &running).await?;
                    }
                }
                code = running.wait(), if !exited => {
                    out.exit = code.ok().flatten();
                    exited = true;
                    drained_by = Some(Instant::now() + OUTPUT_DRAIN);
                }
                _ = sleep_until(drained_by), if drained_by.is_some() => {
                    tracing::warn!(
                        "claude exited {} s ago, but a process it started still holds its output open: the run ends without reading more",
                        OUTPUT_DRAIN.as_secs()
                    );
                    break;
                }
                _ = sleep_until(deadline), if !exited && deadline.is_some() => {
                    let pid = {
                        let mut cur = self.runner.lock();
                        cur.timed_out = true;
                        cur.deadline = None;
                        cur.pid
                    };
                    if let Some(pid) = pid {
                        tokio::spawn(claude::terminate(pid));
                    }
                }
            }
        }
        if !exited {
            out.exit = running.wait().await.ok().flatten();
        }
        self.runner.lock().pid = None;
        // claude reports a resumed session's spending in all: keep this run's own.
        out.tally.charge(&inv.home);
        Ok(out)
    }
}

impl Job<'_> {
    /// Reports one `api_retry` line; ends claude when hive-c0re says to give up.
    async fn report_retry(
        &self,
        c: &mut Client,
        r: ApiRetry,
        running: &claude::Running,
    ) -> Result<(), ClientError> {
        let answer = c
            .call(&AgentRequest::ApiRetry {
                status: r.status,
                error: r.error.clone(),
                attempt: r.attempt,
                max_retries: r.max_retries,
            })
            .await?;
        if answer.give_up {
            tracing::warn!(
                status = ?r.status, error = %r.error,
                "the model API failed and hive-c0re says to give up the turn"
            );
            self.runner
                .lock()
                .gave_up
                .get_or_insert((r.status, r.error));
            if let Some(pid) = running.pid() {
                tokio::spawn(claude::terminate(pid));
            }
        }
        Ok(())
    }
}

/// Sleeps until `at`; never wakes without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl Drop for Job<'_> {
    fn drop(&mut self) {
        *self.runner.lock() = Current::default();
    }
}

impl Stream {
    /// A claude output line as the event hive-c0re records.
    fn event(self, o: Output) -> EventIn {
        match (self, o) {
            (Self::Turn, Output::Stream(v)) => Payload::Stream(v),
            (Self::Turn, Output::Stderr(l)) => Payload::Stderr(l),
            (Self::Compact, Output::Stream(v)) => Payload::CompactStream(v),
            (Self::Compact, Output::Stderr(l)) => Payload::CompactStderr(l),
            (Self::Notes, Output::Stream(v)) => Payload::NotesCompactionStream(v),
            (Self::Notes, Output::Stderr(l)) => Payload::NotesCompactionStream(l.into()),
        }
        .into()
    }
}

/// Most bytes of one string in an event the harness reports: claude's
/// output may carry a whole file, a tool's result or an image, and a turn's
/// prompt a hundred messages; past it the string keeps its head and says
/// how much was cut.
const EVENT_STRING_MAX: usize = 64 * 1024;
/// Most bytes of one event's payload as JSON; past it (many long strings)
/// the event goes as its type and size alone.
const EVENT_PAYLOAD_MAX: usize = 256 * 1024;
/// Most bytes of events in one request: agent.sock refuses a line over
/// [`MAX_LINE_BYTES`], and a refused turn's events ended the harness.
const EVENTS_REQUEST_MAX: usize = MAX_LINE_BYTES / 2;

/// Records events (nothing to do for none), each bounded
/// ([`bounded_event`]) and in as many requests as keep each line well under
/// agent.sock's bound. Events hive-c0re refuses are lost to the history, not
/// a reason to end the turn: its work and its messages go on.
pub async fn send_events(c: &mut Client, items: Vec<EventIn>) -> Result<(), ClientError> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    for item in items {
        let (item, size) = bounded_event(item);
        if !batch.is_empty() && bytes + size > EVENTS_REQUEST_MAX {
            call_events(c, std::mem::take(&mut batch)).await?;
            bytes = 0;
        }
        bytes += size;
        batch.push(item);
    }
    call_events(c, batch).await
}

async fn call_events(c: &mut Client, items: Vec<EventIn>) -> Result<(), ClientError> {
    if items.is_empty() {
        return Ok(());
    }
    match c.call(&AgentRequest::Events { items }).await {
        Ok(_) => Ok(()),
        Err(ClientError::Refused(why)) => {
            tracing::warn!("hive-c0re refused events of this agent, which are not recorded: {why}");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// `item` with each string cut to [`EVENT_STRING_MAX`] bytes, or, a line of
/// claude's output still over [`EVENT_PAYLOAD_MAX`], its `type` and size
/// alone (the harness's own kinds keep their shape, which hive-c0re checks);
/// with its size as JSON.
fn bounded_event(mut item: EventIn) -> (EventIn, usize) {
    fn cut_strings(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) if s.len() > EVENT_STRING_MAX => {
                let mut end = EVENT_STRING_MAX;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                let cut = s.len() - end;
                s.truncate(end);
                s.push_str(&format!("… [{cut} more bytes not recorded]"));
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(cut_strings),
            serde_json::Value::Object(o) => o.values_mut().for_each(cut_strings),
            _ => {}
        }
    }
    let size = |p: &serde_json::Value| serde_json::to_string(p).map_or(0, |t| t.len());
    cut_strings(&mut item.payload);
    let mut bytes = size(&item.payload);
    if bytes > EVENT_PAYLOAD_MAX && item.kind.ends_with("stream") {
        item.payload = serde_json::json!({
            "type": item.payload.get("type").cloned().unwrap_or_default(),
            "not_recorded_bytes": bytes,
        });
        bytes = size(&item.payload);
    }
    let size = bytes + item.kind.len() + 32;
    (item, size)
}

/// Records one event.
pub async fn send_event(c: &mut Client, event: Payload) -> Result<(), ClientError> {
    send_events(c, vec![event.into()]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(payload: serde_json::Value) -> EventIn {
        EventIn {
            kind: "stream".into(),
            payload,
        }
    }

    #[test]
    fn an_events_long_strings_keep_their_head_and_say_what_was_cut() {
        let long = "é".repeat(EVENT_STRING_MAX); // two bytes each: cut on a character
        let (e, size) = bounded_event(stream(serde_json::json!({
            "type": "user", "content": [{"text": long}], "short": "kept",
        })));
        let text = e.payload["content"][0]["text"].as_str().unwrap();
        assert!(text.starts_with("éé"));
        assert!(
            text.ends_with(&format!("… [{} more bytes not recorded]", EVENT_STRING_MAX)),
            "{}",
            &text[text.len() - 60..]
        );
        assert_eq!(e.payload["short"], "kept");
        assert!(size < EVENT_STRING_MAX + 200, "{size}");
    }

    #[test]
    fn an_event_of_many_long_strings_goes_as_its_type_and_size() {
        let many: Vec<String> = (0..10).map(|_| "x".repeat(EVENT_STRING_MAX)).collect();
        let (e, size) = bounded_event(stream(
            serde_json::json!({"type": "assistant", "parts": many}),
        ));
        assert_eq!(e.payload["type"], "assistant");
        assert!(e.payload["not_recorded_bytes"].as_u64().unwrap() > (10 * EVENT_STRING_MAX) as u64);
        assert!(size < 200, "{size}");
        // The harness's own kinds keep their shape, which hive-c0re checks.
        let controls = "\u{1}".repeat(EVENT_STRING_MAX);
        let (stderr, _) = bounded_event(EventIn {
            kind: "stderr".into(),
            payload: serde_json::json!(controls),
        });
        assert!(
            stderr.payload.is_string(),
            "{}",
            &stderr.payload.to_string()[..40]
        );
        let (small, _) = bounded_event(stream(serde_json::json!({"type": "result", "n": 1})));
        assert_eq!(
            small.payload,
            serde_json::json!({"type": "result", "n": 1}),
            "a small event goes as it is"
        );
    }
}
