//! Agent config repositories: `<state>/agents/<name>/config`, a git repo holding `agent.toml`.
//!
//! git is driven through its CLI: the repos are the manager's working copies
//! and the operator's audit trail, and the CLI is what both of them use.

use std::path::Path;
use std::process::Command;

use hive_sh4re::config::AgentConfig;

use crate::error::{Error, Result};

/// The file every config repo holds.
pub const CONFIG_FILE: &str = "agent.toml";

fn git(repo: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "-c",
            "user.name=hive-c0re",
            "-c",
            "user.email=hive-c0re@localhost",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(["-c", "safe.directory=*"])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(Error::io("could not run git (install the git package)"))?;
    if !out.status.success() {
        return Err(Error::refused(format!(
            "git {} failed in {}: {}",
            args.join(" "),
            repo.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Creates the repo with `config` as its first commit (if it does not exist yet); returns HEAD.
pub fn init(repo: &Path, config: &AgentConfig) -> Result<String> {
    if repo.join(".git").exists() {
        return head(repo);
    }
    std::fs::create_dir_all(repo)
        .map_err(Error::io(format!("could not create {}", repo.display())))?;
    git(repo, &["init", "-q", "-b", "main"])?;
    std::fs::write(repo.join(CONFIG_FILE), config.to_toml())
        .map_err(Error::io("could not write agent.toml"))?;
    git(repo, &["add", CONFIG_FILE])?;
    git(repo, &["commit", "-q", "-m", "initial config"])?;
    head(repo)
}

/// The full sha of HEAD.
pub fn head(repo: &Path) -> Result<String> {
    git(repo, &["rev-parse", "HEAD"])
}

/// Resolves `rev` to a full commit sha, refusing what is not a commit of this repo.
pub fn resolve(repo: &Path, rev: &str) -> Result<String> {
    if rev.is_empty()
        || rev.starts_with('-')
        || !rev
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./^~".contains(c))
    {
        return Err(Error::refused(format!(
            "{rev:?} is not a commit: give a sha from the agent's config repo"
        )));
    }
    git(
        repo,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ],
    )
    .map_err(|_| {
        Error::refused(format!(
            "{rev:?} is not a commit of {}: commit there first",
            repo.display()
        ))
    })
}

/// The text of `agent.toml` at `sha`.
pub fn config_at(repo: &Path, sha: &str) -> Result<String> {
    git(repo, &["show", &format!("{sha}:{CONFIG_FILE}")])
}

/// The diff of `agent.toml` from `from` (None: empty) to `to`.
pub fn diff(repo: &Path, from: Option<&str>, to: &str) -> Result<String> {
    match from {
        Some(f) => git(repo, &["diff", f, to, "--", CONFIG_FILE]),
        None => config_at(repo, to),
    }
}

/// The first 12 hex characters of a sha, as `status` shows it.
pub fn short(sha: &str) -> String {
    sha.chars().take(12).collect()
}
