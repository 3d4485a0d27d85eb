//! Error types of the library; every message is a sentence a user can act on.

use std::path::PathBuf;

/// A script that cannot be used, with the rule and field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The text is not TOML, or a top-level key is wrong.
    #[error("the script is not valid: {0}")]
    Syntax(String),
    /// A top-level setting has a bad value.
    #[error("setting `{field}`: {reason}")]
    Setting {
        /// The top-level key.
        field: &'static str,
        /// What is wrong and what to write instead.
        reason: String,
    },
    /// One rule is wrong; `rule` reads like `rule 2 ("hello")`.
    #[error("{rule}: field `{field}`: {reason}")]
    Rule {
        /// Which rule, 1-based, with its name when it has one.
        rule: String,
        /// The offending field, e.g. `user_regex` or `reply[1].input`.
        field: String,
        /// What is wrong and what to write instead.
        reason: String,
    },
}

/// Anything that stops the simulator from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The script file could not be read.
    #[error("cannot read script file {path}: {cause}; check the path given to --script")]
    ReadScript {
        /// The path given to --script.
        path: PathBuf,
        /// The underlying I/O error.
        cause: std::io::Error,
    },
    /// The script file was read but is not a valid script.
    #[error("bad script file {path}: {cause}")]
    BadScript {
        /// The path given to --script.
        path: PathBuf,
        /// What is wrong with it.
        cause: ScriptError,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {cause}; pick a free address with --listen")]
    Bind {
        /// The address given to --listen.
        addr: String,
        /// The underlying I/O error.
        cause: std::io::Error,
    },
    /// The port file or the request log file could not be written.
    #[error("cannot write {path}: {cause}; check that its directory exists and is writable")]
    WriteFile {
        /// The file that could not be written.
        path: PathBuf,
        /// The underlying I/O error.
        cause: std::io::Error,
    },
    /// The HTTP server stopped with an error.
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
    /// Installing the SIGTERM/SIGINT handlers failed.
    #[error("cannot install signal handlers: {0}")]
    Signal(std::io::Error),
}

impl SimError {
    /// True when the error comes from the script, which `main` maps to exit code 2.
    pub fn is_script_error(&self) -> bool {
        matches!(
            self,
            SimError::ReadScript { .. } | SimError::BadScript { .. }
        )
    }
}
