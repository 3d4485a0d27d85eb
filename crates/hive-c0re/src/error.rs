//! The crate's one error type. A `Refused` error is the operator's or agent's
//! doing and reads as a sentence saying what to do; the rest are the hive's.

use crate::runtime::RuntimeError;
use crate::store::{SendError, StoreError};

/// Errors of hive-c0re's operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request cannot be honoured as asked; the text says why and what to do.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A refusal with a sentence for the operator.
    pub fn refused(msg: impl Into<String>) -> Self {
        Self::Refused(msg.into())
    }

    /// True when the store could not be reached (its database is out of reach).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Store(s) if s.is_unreachable())
    }

    /// True when the store answers and cannot store (see [`StoreError::is_unusable`]).
    pub fn is_unusable(&self) -> bool {
        matches!(self, Self::Store(s) if s.is_unusable())
    }

    /// True when the store could not write because the disk is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Self::Store(s) if s.is_disk_full())
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

impl From<SendError> for Error {
    fn from(e: SendError) -> Self {
        match e {
            SendError::InboxFull { .. } | SendError::Nul => Self::Refused(e.to_string()),
            SendError::Store(s) => Self::Store(s),
        }
    }
}

impl From<hive_sh4re::NameError> for Error {
    fn from(e: hive_sh4re::NameError) -> Self {
        Self::Refused(e.to_string())
    }
}

/// Result alias of hive-c0re.
pub type Result<T, E = Error> = std::result::Result<T, E>;
