//! Agent config repositories: `<state>/configs/<name>`, a git repo holding `agent.toml`.
//!
//! git is driven through its CLI: the repos are the manager's working copies
//! and the operator's audit trail, and the CLI is what both of them use.
//! They all live below one directory, which the manager's container gets
//! whole; `<state>/agents/<name>/config` is a symlink to the agent's repo.

use std::path::Path;
use std::process::Command;

use hive_sh4re::AgentName;
use hive_sh4re::config::AgentConfig;

use crate::error::{Error, Result};
use crate::paths::Paths;

/// The file every config repo holds.
pub const CONFIG_FILE: &str = "agent.toml";

/// Refuses a repo path that is a symlink: the manager can write the directory
/// holding the repos, and a link there could point anywhere on the host.
fn not_a_link(repo: &Path) -> Result<()> {
    match std::fs::symlink_metadata(repo) {
        Ok(m) if m.file_type().is_symlink() => Err(Error::refused(format!(
            "{} is a symlink: a config repo must be a real directory; remove the link",
            repo.display()
        ))),
        _ => Ok(()),
    }
}

fn git(repo: &Path, args: &[&str]) -> Result<String> {
    not_a_link(repo)?;
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
        // The manager controls each repo's .git/config; none of it may run a
        // program as the host's root when hive-c0re reads the repo.
        .args([
            "-c",
            "core.fsmonitor=false",
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "diff.external=",
        ])
        .args(["-c", "core.sshCommand=false", "-c", "protocol.allow=never"])
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
    not_a_link(repo)?;
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

/// Points `<state>/agents/<name>/config` at the agent's repo (where DESIGN.md and
/// older hives put it), unless something is there already.
pub fn link(paths: &Paths, name: &AgentName) -> Result<()> {
    let at = paths.config_repo_link(name);
    if std::fs::symlink_metadata(&at).is_ok() {
        return Ok(());
    }
    let dir = paths.agent_dir(name);
    std::fs::create_dir_all(&dir)
        .map_err(Error::io(format!("could not create {}", dir.display())))?;
    let target = Path::new("../../configs").join(name.as_str());
    std::os::unix::fs::symlink(&target, &at)
        .map_err(Error::io(format!("could not link {}", at.display())))
}

/// Moves each repo an older hive kept at `<state>/agents/<name>/config` to
/// `<state>/configs/<name>`, leaving the symlink behind; returns how many moved.
pub fn migrate(paths: &Paths) -> Result<usize> {
    let root = paths.agents_root();
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(format!("could not list {}", root.display()))(e)),
    };
    let mut moved = 0;
    for entry in entries.flatten() {
        let Some(name) = entry
            .file_name()
            .to_str()
            .and_then(|n| AgentName::parse(n).ok())
        else {
            continue;
        };
        let old = paths.config_repo_link(&name);
        let new = paths.config_repo(&name);
        let is_dir = std::fs::symlink_metadata(&old).is_ok_and(|m| m.is_dir());
        if !is_dir || std::fs::symlink_metadata(&new).is_ok() {
            continue;
        }
        std::fs::create_dir_all(paths.configs_root())
            .map_err(Error::io("could not create the config repos' directory"))?;
        std::fs::rename(&old, &new).map_err(Error::io(format!(
            "could not move {} to {}",
            old.display(),
            new.display()
        )))?;
        link(paths, &name)?;
        moved += 1;
    }
    Ok(moved)
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
        Some(f) => git(
            repo,
            &[
                "diff",
                "--no-ext-diff",
                "--no-textconv",
                f,
                to,
                "--",
                CONFIG_FILE,
            ],
        ),
        None => config_at(repo, to),
    }
}

/// The first 12 hex characters of a sha, as `status` shows it.
pub fn short(sha: &str) -> String {
    sha.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repos_own_git_config_runs_nothing_when_the_hive_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let first = init(&repo, &AgentConfig::default()).unwrap();
        let marker = dir.path().join("ran");
        let evil = format!("touch {}", marker.display());
        for (key, value) in [
            ("diff.external", evil.as_str()),
            ("core.fsmonitor", evil.as_str()),
        ] {
            let ok = Command::new("git")
                .arg("-C")
                .arg(&repo)
                .args(["config", key, value])
                .status()
                .unwrap();
            assert!(ok.success());
        }
        std::fs::write(repo.join(CONFIG_FILE), "model = \"sonnet\"\n").unwrap();
        git(&repo, &["commit", "-qam", "sonnet"]).unwrap();
        let second = head(&repo).unwrap();
        let d = diff(&repo, Some(&first), &second).unwrap();
        assert!(d.contains("+model = \"sonnet\""), "{d}");
        assert!(!marker.exists(), "the repo's git config ran a program");
    }

    #[test]
    fn an_old_repo_moves_to_configs_and_leaves_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            state: dir.path().join("state"),
            run: dir.path().join("run"),
        };
        let alice = AgentName::parse("alice").unwrap();
        let old = paths.config_repo_link(&alice);
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join(CONFIG_FILE), "model = 'x'\n").unwrap();
        assert_eq!(migrate(&paths).unwrap(), 1);
        assert!(paths.config_repo(&alice).join(CONFIG_FILE).is_file());
        assert!(std::fs::symlink_metadata(&old).unwrap().is_symlink());
        assert_eq!(
            std::fs::read_to_string(old.join(CONFIG_FILE)).unwrap(),
            "model = 'x'\n"
        );
        assert_eq!(migrate(&paths).unwrap(), 0, "a second start moves nothing");
    }

    #[test]
    fn a_repo_that_is_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("dave");
        std::os::unix::fs::symlink("/etc", &link).unwrap();
        let err = init(&link, &AgentConfig::default()).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert!(head(&link).is_err());
    }
}
