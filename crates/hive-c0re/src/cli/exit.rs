//! The CLI's exit codes: a file of their own, so `output` reads them
//! without importing the CLI that uses `output`.

/// Done.
pub const DONE: i32 = 0;
/// The daemon refused (its sentence is on stderr), or the verb failed.
pub const REFUSED: i32 = 1;
/// hive-c0re is not running, or not reachable by this user.
pub const UNREACHABLE: i32 = 2;
/// The command line is wrong (EX_USAGE): nothing was asked of the daemon.
pub const USAGE: i32 = 64;
