//! `state_quota`: what one agent's files may take on its node. Past it the
//! agent is stopped and the operator told, and it starts again only once
//! back within it: one agent's files would otherwise grow until the
//! free-space alarm stops every agent's messages. Measured in `space.rs`.

use std::sync::Arc;
use std::time::Instant;

use hive_sh4re::AgentName;
use hive_sh4re::notification::NotificationKind;

use super::Hive;
use crate::error::{Error, Result};
use crate::runtime::Usage;
use crate::space::{grouped, human};

/// What each file counts as, at least, against the quota: ext4's default
/// bytes per inode, so a quota that fits the disk's bytes fits its inodes
/// too, and millions of empty files are over it as a big file is.
pub(super) const FILE_MIN_BYTES: u64 = 16 * 1024;
/// Measures in a row that ran out of their own time before an agent is
/// taken to be over its quota: a tree too large to walk hides what it holds.
const SLOW_MEASURES: u32 = 3;

/// The `state_quota` setting: a size, or none at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateQuota {
    /// No quota (`none`): an agent's files may fill the disk.
    Off,
    /// At most this many bytes.
    Bytes(u64),
}

impl StateQuota {
    /// `none`, or a size above nothing (none would stop every agent that has a file).
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        if text.trim() == "none" {
            return Ok(Self::Off);
        }
        match crate::space::parse_size(text)? {
            0 => Err(format!(
                "a state_quota of {text} would stop every agent: give a size such as 20GiB, or none for no quota"
            )),
            n => Ok(Self::Bytes(n)),
        }
    }
}

/// Each agent's quota on this node: the one set, else a quarter of the
/// state dir's file system, so no one agent fills what all share; None for
/// none (set so, or the file system unreadable, which is logged).
pub fn state_quota(set: Option<StateQuota>, state: &std::path::Path) -> Option<u64> {
    match set {
        Some(StateQuota::Off) => None,
        Some(StateQuota::Bytes(n)) => Some(n),
        None => match crate::space::size_of(state) {
            Ok(total) => {
                let quota = (total / 4).max(1);
                tracing::info!(
                    "each agent's files may take {} on this node (state_quota: a quarter of {}); \
                     set --state-quota to change it, or none for no quota",
                    human(quota),
                    crate::space::filesystem_of(state)
                );
                Some(quota)
            }
            Err(e) => {
                tracing::warn!(
                    "no state_quota: the size of {}'s file system cannot be read ({e}); set --state-quota",
                    state.display()
                );
                None
            }
        },
    }
}

/// An agent's files as last measured here.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Measured {
    /// What the walk found.
    pub usage: Usage,
    /// When.
    pub at: Instant,
    /// Measures in a row whose walk ran out of its own time or failed.
    pub slow: u32,
}

/// Why files measured as `m` on node `node` are over `quota`, or None.
fn breach(quota: u64, node: &str, m: &Measured) -> Option<String> {
    let u = m.usage;
    Some(if u.too_deep {
        format!(
            "its files on node {node} nest deeper than hive-c0re walks (1,024 directories), \
             so what they hold cannot be counted against the hive's state_quota of {}",
            human(quota)
        )
    } else if m.slow >= SLOW_MEASURES {
        format!(
            "its files on node {node} could not be counted at {SLOW_MEASURES} measures in a row \
             (a tree of millions of entries, or one that changes under the walk), so they cannot \
             be held to the hive's state_quota of {}",
            human(quota)
        )
    } else if u.bytes.max(u.files.saturating_mul(FILE_MIN_BYTES)) > quota {
        let at_least = if u.complete { "" } else { "at least " };
        format!(
            "its files on node {node} take {at_least}{} in {at_least}{} files (each counts as at \
             least {}), over the hive's state_quota of {}",
            human(u.bytes),
            grouped(u.files),
            human(FILE_MIN_BYTES),
            human(quota)
        )
    } else {
        return None;
    })
}

impl Hive {
    /// Why agent `name`, its files measured as `m`, is over the hive's
    /// `state_quota`, with what to do: None within it (or with none set).
    pub(super) fn over_quota(&self, name: &AgentName, m: &Measured) -> Option<String> {
        let why = breach(self.settings.state_quota?, self.node().as_str(), m)?;
        Some(format!(
            "{why}: remove some of them under {} (or raise state_quota)",
            self.paths.agent_state(name).display()
        ))
    }

    /// Stops agent `name`, whose files passed the hive's `state_quota`
    /// (`why`), and tells the operator.
    pub(super) async fn stop_over_quota(self: &Arc<Self>, name: &AgentName, why: &str) {
        if let Err(e) = self.stop(name, false).await {
            tracing::warn!(agent = %name, "could not stop an agent over its state_quota: {e}");
            return;
        }
        let text = format!("{name} was stopped: {why}, then `hive-c0re start {name}`.");
        tracing::warn!("{text}");
        self.tell_operator(NotificationKind::DiskFull, Some(name), &text)
            .await;
    }

    /// Refuses to run agent `name` (start, restart, spawn over a kept state
    /// dir) while its files are over the hive's `state_quota`, measured again
    /// now (the operator may just have removed some), or cannot be measured.
    pub(super) async fn refuse_over_quota(&self, name: &AgentName) -> Result<()> {
        if self.settings.state_quota.is_none() {
            return Ok(());
        }
        let why = match self.measure_state_now(name).await {
            Ok(None) => return Ok(()),
            Ok(Some(m)) => match self.over_quota(name, &m) {
                None => return Ok(()),
                Some(why) => why,
            },
            Err(why) => why,
        };
        Err(Error::refused(format!("cannot start {name}: {why}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(bytes: u64, files: u64, complete: bool, too_deep: bool, slow: u32) -> Measured {
        Measured {
            usage: Usage {
                bytes,
                files,
                complete,
                too_deep,
            },
            at: Instant::now(),
            slow,
        }
    }

    #[test]
    fn bytes_files_depth_and_walks_that_never_end_each_pass_the_quota() {
        let q = 1 << 20;
        let over = |m: Measured| breach(q, "n1", &m);
        assert_eq!(
            over(measured(q, 64, true, false, 0)),
            None,
            "at it, not over"
        );
        let bytes = over(measured(q + 1, 1, true, false, 0)).unwrap();
        assert!(bytes.contains("take 1.0 MiB in 1 files"), "{bytes}");
        // 65 empty files count as 65 x 16 KiB.
        let files = over(measured(0, 65, true, false, 0)).unwrap();
        assert!(
            files.contains("take 0 bytes in 65 files (each counts as at least 16.0 KiB)"),
            "{files}"
        );
        let partial = over(measured(0, 70, false, false, 0)).unwrap();
        assert!(
            partial.contains("take at least 0 bytes in at least 70 files"),
            "{partial}"
        );
        let deep = over(measured(0, 1, false, true, 0)).unwrap();
        assert!(deep.contains("on node n1 nest deeper"), "{deep}");
        assert_eq!(over(measured(0, 1, false, false, SLOW_MEASURES - 1)), None);
        let slow = over(measured(0, 1, false, false, SLOW_MEASURES)).unwrap();
        assert!(
            slow.contains("could not be counted at 3 measures in a row"),
            "{slow}"
        );
    }
}
