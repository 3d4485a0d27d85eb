//! The hive-wide activity feed: turns started and ended, crashes, messages
//! and approvals of every agent, newest first, in pages.
//!
//! It reads three tables, each newest first from its own cursor, and merges
//! them by time. The events come through the partial index `events_feed`, so
//! a page costs `limit` rows of each table however long the history is. The
//! cursor (`e<id>.m<id>.a<id>`) holds each table's next id, so paging never
//! skips nor repeats an item even when several share a millisecond.

use hive_sh4re::event::{ContainerCrash, TurnEnd, TurnStart};
use hive_sh4re::host::{Feed, FeedItem};

use super::Hive;
use crate::clock::rfc3339;
use crate::error::{Error, Result};
use crate::store::{ApprovalRow, EventRow, MessageRow};

/// Most characters of a message or prompt a feed line quotes.
const QUOTE_CHARS: usize = 160;

/// Where the live feed is: each table's tail position (the store's
/// `Tail::next`; an id on sqlite, a transaction on PostgreSQL).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FeedCursor {
    pub event: i64,
    pub message: i64,
    pub approval: i64,
}

/// The first line of `s`, at most [`QUOTE_CHARS`] characters.
fn quote(s: &str) -> String {
    let line = s
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    // The agent's words: a bidi override must not make them read otherwise.
    let line = hive_sh4re::text::visible(line);
    hive_sh4re::text::clip(&line, QUOTE_CHARS + 1).into_owned()
}

fn event_item(e: &EventRow) -> FeedItem {
    let (kind, text) = match e.kind.as_str() {
        "turn_start" => {
            let p: Option<TurnStart> = serde_json::from_str(&e.payload_json).ok();
            let prompt = p.map(|p| quote(&p.prompt)).unwrap_or_default();
            ("turn_start", format!("turn started: {prompt}"))
        }
        "turn_end" => {
            let text = match serde_json::from_str::<TurnEnd>(&e.payload_json) {
                Ok(p) => format!(
                    "turn ended: {} · {:.1}s{}",
                    p.exit_class.as_str(),
                    p.duration_ms as f64 / 1000.0,
                    p.error
                        .map(|e| format!(" · {}", quote(&e)))
                        .unwrap_or_default()
                ),
                Err(_) => "turn ended".to_owned(),
            };
            ("turn_end", text)
        }
        _ => {
            let p: Option<ContainerCrash> = serde_json::from_str(&e.payload_json).ok();
            let text = match p {
                Some(p) if p.gave_up => format!("harness {}; left failed", p.exit),
                Some(p) => format!("harness {} (crash {})", p.exit, p.attempt),
                None => "harness crashed".to_owned(),
            };
            ("crash", text)
        }
    };
    FeedItem {
        key: format!("e{}", e.id),
        kind: kind.into(),
        ts: rfc3339(e.ts),
        agent: e.agent.clone(),
        to: None,
        id: e.id,
        text,
    }
}

fn message_item(m: &MessageRow) -> FeedItem {
    FeedItem {
        key: format!("m{}", m.id),
        kind: "message".into(),
        ts: rfc3339(m.created_at),
        agent: m.sender.clone(),
        to: Some(m.recipient.clone()),
        id: m.id,
        text: quote(&m.body),
    }
}

fn approval_item(a: &ApprovalRow) -> FeedItem {
    let what = a.description.as_deref().unwrap_or(&a.commit_ref);
    FeedItem {
        key: format!("a{}", a.id),
        kind: "approval".into(),
        ts: rfc3339(a.created_at),
        agent: a.agent.clone(),
        to: None,
        id: a.id,
        text: format!(
            "approval #{} {} ({}): {}",
            a.id,
            a.kind.as_str(),
            a.status.as_str(),
            quote(what)
        ),
    }
}

/// Reads a page cursor: `e<id>.m<id>.a<id>`, each the exclusive upper bound of its table.
/// Each row as a feed item keyed by (time, table, id), the feed's order.
fn keyed(
    events: &[EventRow],
    messages: &[MessageRow],
    approvals: &[ApprovalRow],
) -> Vec<(i64, usize, i64, FeedItem)> {
    let events = events.iter().map(|x| (x.ts, 0, x.id, event_item(x)));
    let messages = messages
        .iter()
        .map(|x| (x.created_at, 1, x.id, message_item(x)));
    let approvals = approvals
        .iter()
        .map(|x| (x.created_at, 2, x.id, approval_item(x)));
    events.chain(messages).chain(approvals).collect()
}

fn parse_cursor(s: &str) -> Option<[i64; 3]> {
    let mut out = [0; 3];
    let mut parts = s.split('.');
    for (i, tag) in ['e', 'm', 'a'].into_iter().enumerate() {
        out[i] = parts.next()?.strip_prefix(tag)?.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

impl Hive {
    /// A page of the feed, newest first: `limit` items before `before` (a
    /// cursor a previous page returned), or the newest without it.
    pub async fn feed(&self, before: Option<&str>, limit: u32) -> Result<Feed> {
        let [e, m, a] = match before {
            Some(c) => parse_cursor(c).ok_or_else(|| {
                Error::refused(format!(
                    "{c:?} is not a feed cursor: pass the `before` a previous page returned"
                ))
            })?,
            None => [i64::MAX; 3],
        };
        let events = self.store.feed_events_before(Some(e), limit).await?;
        let messages = self.store.messages_before(Some(m), limit).await?;
        let mut approvals = self.store.approvals().await?;
        approvals.retain(|x| x.id < a);
        approvals.reverse();
        approvals.truncate(limit as usize);
        // (time, table, id): newest first; ties go to the later table and id.
        let mut all = keyed(&events, &messages, &approvals);
        all.sort_by_key(|x| std::cmp::Reverse((x.0, x.1, x.2)));
        all.truncate(limit as usize);
        let fetched = [events.len(), messages.len(), approvals.len()];
        let mut next = [e, m, a];
        for (i, n) in next.iter_mut().enumerate() {
            let taken: Vec<i64> = all.iter().filter(|x| x.1 == i).map(|x| x.2).collect();
            if let Some(min) = taken.iter().min() {
                *n = *min;
            }
            // A table that gave fewer than asked and all of it was taken is done.
            if fetched[i] < limit as usize && taken.len() == fetched[i] {
                *n = 0;
            }
        }
        Ok(Feed {
            items: all.into_iter().map(|x| x.3).collect(),
            before: (next != [0; 3]).then(|| format!("e{}.m{}.a{}", next[0], next[1], next[2])),
        })
    }

    /// Where the live feed is now: each table's tail position.
    pub async fn feed_cursor(&self) -> Result<FeedCursor> {
        Ok(FeedCursor {
            event: self.store.event_tail().await?,
            message: self.store.message_tail().await?,
            approval: self.store.approval_tail().await?,
        })
    }

    /// Feed items committed after `cursor`, oldest first (about `limit` of
    /// each table), the cursor past them, and whether more may be ready in
    /// a moment (read again soon: see `store::Tail::pending`).
    pub async fn feed_after(
        &self,
        cursor: FeedCursor,
        limit: u32,
    ) -> Result<(Vec<FeedItem>, FeedCursor, bool)> {
        let events = self.store.feed_events_after(cursor.event, limit).await?;
        let messages = self.store.messages_after(cursor.message, limit).await?;
        let approvals = self.store.approvals_after(cursor.approval).await?;
        let next = FeedCursor {
            event: events.next,
            message: messages.next,
            approval: approvals.next,
        };
        let pending = events.pending || messages.pending || approvals.pending;
        let mut all = keyed(&events.rows, &messages.rows, &approvals.rows);
        all.sort_by_key(|x| (x.0, x.1, x.2));
        Ok((all.into_iter().map(|x| x.3).collect(), next, pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back() {
        assert_eq!(parse_cursor("e12.m3.a0"), Some([12, 3, 0]));
        assert_eq!(parse_cursor("e12.m3"), None);
        assert_eq!(parse_cursor("x12.m3.a0"), None);
        assert_eq!(parse_cursor("e12.m3.a0.z"), None);
    }

    #[test]
    fn quotes_are_one_bounded_line() {
        assert_eq!(quote("\n  hello\nworld"), "hello");
        assert_eq!(quote(&"x".repeat(500)).chars().count(), QUOTE_CHARS + 1);
        assert_eq!(
            quote("run \u{202E}fr- mr\u{202C}"),
            "run ⟨U+202E⟩fr- mr⟨U+202C⟩"
        );
    }
}
