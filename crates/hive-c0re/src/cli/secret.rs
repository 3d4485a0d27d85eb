//! Reading a secret's value for `secret set`: from stdin, never the command
//! line (where `ps` and shell history would keep it). At a terminal it is
//! asked for without echo; from a pipe it is everything read, less one
//! trailing newline.

use std::io::{BufRead, IsTerminal, Read, Write};

use hive_sh4re::secret::{MAX_VALUE_BYTES, SecretName, SecretValue};
use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};

use super::CliError;

/// The value of `name`, from the terminal (no echo) or from what stdin carries.
pub fn read_value(name: &SecretName) -> Result<SecretValue, CliError> {
    let stdin = std::io::stdin();
    let text = if stdin.is_terminal() {
        prompt(name)?
    } else {
        let mut buf = Vec::new();
        stdin
            .lock()
            .take(MAX_VALUE_BYTES as u64 + 3)
            .read_to_end(&mut buf)
            .map_err(|e| CliError::Failed(format!("could not read the value from stdin: {e}")))?;
        let text = String::from_utf8(buf).map_err(|_| {
            CliError::Usage(
                "the value on stdin is not UTF-8 text: an environment variable for claude must be"
                    .into(),
            )
        })?;
        strip_newline(text)
    };
    if text.is_empty() {
        return Err(CliError::Usage(format!(
            "no value for {name} on stdin: pipe it in, e.g. printf %s \"$VALUE\" | hive-c0re secret set {name} \
             (the value never goes on the command line)"
        )));
    }
    SecretValue::parse(text).map_err(|e| CliError::Usage(e.0))
}

/// Asks for the value at the terminal, with echo off for the line.
fn prompt(name: &SecretName) -> Result<String, CliError> {
    let stdin = std::io::stdin();
    eprint!("value of {name} (not shown; Enter ends it): ");
    let _ = std::io::stderr().flush();
    let saved = tcgetattr(&stdin).ok();
    if let Some(t) = &saved {
        let mut quiet = t.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(t) = &saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, t);
    }
    eprintln!();
    read.map_err(|e| CliError::Failed(format!("could not read the value: {e}")))?;
    Ok(strip_newline(line))
}

/// `text` less one trailing `\n` or `\r\n` (what `echo` and a terminal add).
fn strip_newline(mut text: String) -> String {
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_goes() {
        assert_eq!(strip_newline("abc\n".into()), "abc");
        assert_eq!(strip_newline("abc\r\n".into()), "abc");
        assert_eq!(strip_newline("abc\n\n".into()), "abc\n");
        assert_eq!(strip_newline("abc".into()), "abc");
    }
}
