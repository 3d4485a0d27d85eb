//! How a node reaches its PostgreSQL database: the URL, where the password
//! comes from, and what `sslmode` asks of TLS.
//!
//! The password never has to be on a command line (where `ps` shows it): it
//! comes from the URL only when the URL itself came from a private file,
//! else from the config file's key, `PGPASSWORD`, or a passfile
//! (`PGPASSFILE`, default `~/.pgpass`), in libpq's order.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokio_postgres::config::{Host, SslMode as WireSslMode};

use crate::store::{Result, StoreError};

/// libpq's `sslmode`, all six values; see [`super::tls`] for what each checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// libpq tries without TLS first; hyperhive tries TLS first, as `prefer`.
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(StoreError::Settings(format!(
                    "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                )));
            }
        })
    }

    /// Its name in a connection string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    fn wire(self) -> WireSslMode {
        match self {
            Self::Disable => WireSslMode::Disable,
            Self::Allow | Self::Prefer => WireSslMode::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => WireSslMode::Require,
        }
    }
}

/// A node's connection settings, as serve's config gives them.
#[derive(Clone)]
pub struct PgSettings {
    /// `postgres://USER@HOST:PORT/DB?sslmode=...&sslrootcert=...`, normally without a password.
    pub url: String,
    /// The password from the config file's key, if it has one.
    pub password: Option<String>,
    /// Connections this node keeps open at most.
    pub pool_size: usize,
}

impl fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &redact(&self.url))
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl PgSettings {
    /// Settings for `url` with the default pool size and no password of their own.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            password: None,
            pool_size: 16,
        }
    }

    /// True when the URL carries a password: serve refuses such a URL on its command line.
    pub fn url_has_password(&self) -> bool {
        split_settings(&self.url)
            .ok()
            .and_then(|(rest, _)| tokio_postgres::Config::from_str(&rest).ok())
            .is_some_and(|c| c.get_password().is_some())
    }

    /// Resolves everything a connection needs; `env` reads an environment variable.
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Resolved> {
        let (rest, params) = split_settings(&self.url)?;
        let mut config = tokio_postgres::Config::from_str(&rest).map_err(|e| {
            StoreError::Settings(format!(
                "the database URL {} does not parse ({e}): write postgres://USER@HOST:PORT/DATABASE",
                redact(&self.url)
            ))
        })?;
        // The string's own sslmode (taken out above, from a URL or a
        // key=value string alike) comes before PGSSLMODE, as in libpq.
        let sslmode = match params.sslmode.or_else(|| env("PGSSLMODE")) {
            Some(s) => SslMode::parse(&s)?,
            None => SslMode::Prefer,
        };
        config.ssl_mode(sslmode.wire());
        let root_cert = params
            .sslrootcert
            .or_else(|| env("PGSSLROOTCERT"))
            .map(PathBuf::from);
        if config.get_user().is_none() {
            let user = env("PGUSER")
                .or_else(|| {
                    nix::unistd::User::from_uid(nix::unistd::geteuid())
                        .ok()
                        .flatten()
                        .map(|u| u.name)
                })
                .ok_or_else(|| {
                    StoreError::Settings(
                        "the database URL names no user and this process's user has no name: write postgres://USER@HOST/DATABASE".into(),
                    )
                })?;
            config.user(&user);
        }
        if config.get_dbname().is_none() {
            let user = config.get_user().unwrap_or_default().to_owned();
            config.dbname(&user);
        }
        if config.get_password().is_none() {
            if let Some(p) = self.password.clone().or_else(|| env("PGPASSWORD")) {
                config.password(p);
            } else if let Some(p) = passfile_password(&config, env)? {
                config.password(p);
            }
        }
        config.application_name("hive-c0re");
        // The string's own `connect_timeout` stands; without one a dead host is given 10 s.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        // A peer that vanished (a cut link) is found out within a minute, not
        // hours: an idle connection by keepalives (30 s, then 3 probes 10 s
        // apart), one waiting on a reply by the kernel giving up on unacked
        // data after 20 s; the call then fails with a sentence and the pool
        // drops the connection, instead of a `status` hanging for the ~15
        // minutes TCP retries by default.
        config.keepalives_idle(std::time::Duration::from_secs(30));
        config.keepalives_interval(std::time::Duration::from_secs(10));
        config.keepalives_retries(3);
        config.tcp_user_timeout(std::time::Duration::from_secs(20));
        // A node cut off inside a transaction leaves the server waiting for
        // its next word, locks held (a fenced claim holds its agent's lease
        // row): the server ends such a session after 10 s idle, so the
        // lease can pass on instead of waiting hours for TCP to notice.
        // A statement waits on a lock at most `lock_timeout` (a DBA's
        // `LOCK TABLE`, a `VACUUM FULL`, a session holding rows for good),
        // then fails as the database out of reach, so the alarm goes on and
        // harnesses wait, instead of every caller hanging behind it.
        let idle = format!(
            "-c idle_in_transaction_session_timeout=10s -c lock_timeout={}ms",
            lock_timeout().as_millis()
        );
        let options = match config.get_options() {
            Some(o) if !o.trim().is_empty() => format!("{o} {idle}"),
            _ => idle,
        };
        config.options(&options);
        Ok(Resolved {
            name: describe(&config),
            config,
            sslmode,
            root_cert,
            pool_size: self.pool_size.max(2),
        })
    }
}

/// How long a statement waits on a lock: `HIVE_PG_LOCK_TIMEOUT_SECS` (for
/// tests), else 30 s.
pub fn lock_timeout() -> std::time::Duration {
    crate::clock::secs_from_env(
        "HIVE_PG_LOCK_TIMEOUT_SECS",
        std::time::Duration::from_secs(30),
    )
}

/// Settings ready to connect with.
pub struct Resolved {
    pub config: tokio_postgres::Config,
    pub sslmode: SslMode,
    pub root_cert: Option<PathBuf>,
    pub pool_size: usize,
    /// `user@host:port/db`, for messages; never the password.
    pub name: String,
}

/// The URL's own parameters tokio-postgres does not take.
#[derive(Default)]
struct Params {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of a connection string, a URL or
/// `key=value` pairs, leaving the rest for tokio-postgres.
fn split_settings(s: &str) -> Result<(String, Params)> {
    if is_url(s) {
        split_url(s)
    } else {
        Ok(split_key_values(s))
    }
}

/// Whether a connection string is a URL (`postgres://...`), not `key=value` pairs.
fn is_url(s: &str) -> bool {
    s.split_once("://")
        .is_some_and(|(scheme, _)| !scheme.contains(|c: char| c.is_whitespace() || c == '='))
}

/// Takes `sslmode` and `sslrootcert` out of a URL's query (tokio-postgres knows
/// only three sslmodes and no root file), leaving the rest for tokio-postgres.
fn split_url(url: &str) -> Result<(String, Params)> {
    let mut params = Params::default();
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), params));
    };
    let mut kept = vec![];
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "sslmode" => params.sslmode = Some(percent_decode(v)?),
            "sslrootcert" => params.sslrootcert = Some(percent_decode(v)?),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, params))
}

fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    StoreError::Settings(format!(
                        "the database URL has a bad escape in {s:?}: write %XX with two hex digits"
                    ))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| StoreError::Settings(format!("the database URL parameter {s:?} is not UTF-8")))
}

/// The URL with any password replaced, for messages and logs.
///
/// It reads the text as tokio-postgres does, and hides a little more where
/// the writer may have meant more: in a URL the user info's password (from
/// the first `:` to the first `@`, the parser's reading, or to the host's
/// `@` when the password has an unescaped `@` of its own) and any query
/// parameter whose key (percent-decoded) names a password; in a
/// `key=value` connection string the `password` key's value, quoted or not,
/// and the rest of a string that does not parse when it names a password.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) if is_url(url) => redact_url(scheme, rest),
        _ => redact_key_values(url),
    }
}

const HIDDEN: &str = "<hidden>";

fn redact_url(scheme: &str, mut rest: &str) -> String {
    let mut out = format!("{scheme}://");
    if let Some(first_at) = rest.find('@')
        && let Some(colon) = rest[..first_at].find(':')
    {
        let host = &rest[first_at + 1..];
        let host = &host[..host.find(['/', '?']).unwrap_or(host.len())];
        let last_at = first_at + 1 + host.rfind('@').map_or(0, |i| i + 1) - 1;
        out.push_str(&rest[..=colon]);
        out.push_str(HIDDEN);
        rest = &rest[last_at..];
    }
    let Some((base, query)) = rest.split_once('?') else {
        out.push_str(rest);
        return out;
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if names_password(key) => format!("{key}={HIDDEN}"),
            _ => pair.to_owned(),
        })
        .collect();
    out.push_str(&format!("{base}?{}", pairs.join("&")));
    out
}

/// Whether a URL's query key, percent-decoded where it can be, names a password.
fn names_password(key: &str) -> bool {
    percent_decode(key)
        .unwrap_or_else(|_| key.to_owned())
        .to_ascii_lowercase()
        .contains("password")
}

/// A `key=value ...` connection string with the `password` values hidden.
fn redact_key_values(s: &str) -> String {
    let (pairs, tail) = key_values(s);
    let mut out = String::with_capacity(s.len());
    for p in &pairs {
        if p.key == "password" {
            out.push_str(&s[p.start..p.value_start]);
            out.push_str(HIDDEN);
        } else {
            out.push_str(&s[p.start..p.end]);
        }
    }
    match tail {
        // Past what parses nothing says where a value ends: hide it all if it names a password.
        Tail::Unparsed { start, key_start }
            if s[key_start..].to_ascii_lowercase().contains("password") =>
        {
            out.push_str(&s[start..key_start]);
            out.push_str(HIDDEN);
        }
        Tail::Unparsed { start, .. } | Tail::Blank(start) => out.push_str(&s[start..]),
    }
    out
}

/// One `key=value` of a connection string: where it starts (its leading
/// white space included), its key, where its value starts and where it ends.
struct Pair<'a> {
    start: usize,
    key: &'a str,
    value_start: usize,
    end: usize,
}

impl Pair<'_> {
    /// The value as libpq reads it: unquoted, each backslash escape taken.
    fn value(&self, s: &str) -> String {
        let raw = &s[self.value_start..self.end];
        let raw = raw
            .strip_prefix('\'')
            .and_then(|r| r.strip_suffix('\''))
            .unwrap_or(raw);
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            out.push(if c == '\\' {
                chars.next().unwrap_or(c)
            } else {
                c
            });
        }
        out
    }
}

/// What follows a connection string's last pair.
enum Tail {
    /// White space from here on.
    Blank(usize),
    /// Text that does not parse as a pair, from `start` (its key at `key_start`).
    Unparsed { start: usize, key_start: usize },
}

/// The pairs of a `key=value ...` string, split by the rules of libpq's (and
/// tokio-postgres's) parser: keys end at white space or `=`, a value is
/// `'quoted'` or runs to white space, and a backslash escapes the next
/// character in either.
fn key_values(s: &str) -> (Vec<Pair<'_>>, Tail) {
    let mut pairs = vec![];
    let mut it = s.char_indices().peekable();
    let at = |it: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        it.peek().map_or(s.len(), |&(i, _)| i)
    };
    loop {
        let start = at(&mut it);
        while it.next_if(|&(_, c)| c.is_whitespace()).is_some() {}
        let key_start = at(&mut it);
        while it
            .next_if(|&(_, c)| !c.is_whitespace() && c != '=')
            .is_some()
        {}
        let key = &s[key_start..at(&mut it)];
        if key.is_empty() {
            return (pairs, Tail::Blank(start));
        }
        while it.next_if(|&(_, c)| c.is_whitespace()).is_some() {}
        let mut value_start = 0;
        let parsed = it.next_if(|&(_, c)| c == '=').is_some() && {
            while it.next_if(|&(_, c)| c.is_whitespace()).is_some() {}
            value_start = at(&mut it);
            value_ends(&mut it)
        };
        if !parsed {
            return (pairs, Tail::Unparsed { start, key_start });
        }
        pairs.push(Pair {
            start,
            key,
            value_start,
            end: at(&mut it),
        });
    }
}

/// Takes `sslmode` and `sslrootcert` out of a `key=value` string, as
/// [`split_url`] does out of a URL (tokio-postgres parses only three
/// sslmodes, and would refuse `verify-full`).
fn split_key_values(s: &str) -> (String, Params) {
    let (pairs, tail) = key_values(s);
    let mut params = Params::default();
    let mut rest = String::with_capacity(s.len());
    for p in &pairs {
        match p.key {
            "sslmode" => params.sslmode = Some(p.value(s)),
            "sslrootcert" => params.sslrootcert = Some(p.value(s)),
            _ => rest.push_str(&s[p.start..p.end]),
        }
    }
    // What does not parse is left for tokio-postgres to refuse in its words.
    if let Tail::Unparsed { start, .. } = tail {
        rest.push_str(&s[start..]);
    }
    (rest, params)
}

/// Takes one connection-string value off `it`: `'quoted'` or up to white
/// space, a backslash escaping the next character. False for an unclosed quote.
fn value_ends(it: &mut std::iter::Peekable<std::str::CharIndices<'_>>) -> bool {
    let quoted = it.next_if(|&(_, c)| c == '\'').is_some();
    while let Some(&(_, c)) = it.peek() {
        if quoted && c == '\'' {
            it.next();
            return true;
        }
        if !quoted && c.is_whitespace() {
            return true;
        }
        it.next();
        if c == '\\' {
            it.next();
        }
    }
    !quoted
}

fn describe(c: &tokio_postgres::Config) -> String {
    let host = match c.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        c.get_user().unwrap_or_default(),
        c.get_dbname().unwrap_or_default()
    )
}

/// The password of the first matching line of the passfile, as libpq reads it;
/// refuses a file others may read, rather than use it or skip it quietly.
fn passfile_password(
    c: &tokio_postgres::Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>> {
    let (path, explicit) = match env("PGPASSFILE") {
        Some(p) => (PathBuf::from(p), true),
        None => match env("HOME") {
            Some(h) => (Path::new(&h).join(".pgpass"), false),
            None => return Ok(None),
        },
    };
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(None),
        Err(e) => {
            return Err(StoreError::Settings(format!(
                "could not read the password file {}: {e}",
                path.display()
            )));
        }
    };
    if !meta.is_file() {
        return Err(StoreError::Settings(format!(
            "the password file {} is not a regular file",
            path.display()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(StoreError::Settings(format!(
            "the password file {} may be read by other users: chmod 600 it",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| {
        StoreError::Settings(format!(
            "could not read the password file {}: {e}",
            path.display()
        ))
    })?;
    let host = match c.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        // libpq matches a socket in the default directory as localhost.
        Some(Host::Unix(_)) | None => "localhost".into(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432).to_string();
    let want = [
        host.as_str(),
        port.as_str(),
        c.get_dbname().unwrap_or_default(),
        c.get_user().unwrap_or_default(),
    ];
    Ok(text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(passfile_fields)
        .find(|f| {
            f[..4]
                .iter()
                .zip(want)
                .all(|(have, w)| have == "*" || have == w)
        })
        .map(|mut f| f.swap_remove(4)))
}

/// The five fields of a passfile line (`\:` and `\\` escaped), if it has five.
fn passfile_fields(line: &str) -> Option<Vec<String>> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' => fields.last_mut()?.push(chars.next().unwrap_or('\\')),
            ':' if fields.len() < 5 => fields.push(String::new()),
            other => fields.last_mut()?.push(other),
        }
    }
    (fields.len() == 5).then_some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::Write;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn password(r: &Resolved) -> Option<String> {
        r.config
            .get_password()
            .map(|p| String::from_utf8(p.to_vec()).unwrap())
    }

    #[test]
    fn sslmode_and_root_cert_come_out_of_the_url() {
        let s = PgSettings::new(
            "postgres://hive@db.example:6543/hive?sslmode=verify-full&sslrootcert=%2Fetc%2Fhive%2Fca.pem&connect_timeout=3",
        );
        let r = s.resolve(&env_of(&[])).unwrap();
        assert_eq!(r.sslmode, SslMode::VerifyFull);
        assert_eq!(r.config.get_ssl_mode(), WireSslMode::Require);
        assert_eq!(r.root_cert.as_deref(), Some(Path::new("/etc/hive/ca.pem")));
        assert_eq!(r.name, "hive@db.example:6543/hive");
        let e = PgSettings::new("postgres://h@x/y?sslmode=verify")
            .resolve(&env_of(&[]))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not one of disable"), "{e}");
    }

    #[test]
    fn sslmode_and_root_cert_come_out_of_key_value_pairs() {
        let s = PgSettings::new(
            "host=db.example port=6543 user=hive dbname=hive sslmode = verify-full sslrootcert='/etc/hive/my ca.pem' connect_timeout=3",
        );
        let r = s.resolve(&env_of(&[("PGSSLMODE", "disable")])).unwrap();
        assert_eq!(r.sslmode, SslMode::VerifyFull);
        assert_eq!(r.config.get_ssl_mode(), WireSslMode::Require);
        assert_eq!(
            r.root_cert.as_deref(),
            Some(Path::new("/etc/hive/my ca.pem"))
        );
        assert_eq!(r.name, "hive@db.example:6543/hive");
        assert_eq!(
            r.config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(3)),
            "the rest goes to tokio-postgres, and stands"
        );
        let r = PgSettings::new("host=db user=hive dbname=hive sslrootcert=/x\\ y.pem")
            .resolve(&env_of(&[("PGSSLMODE", "require")]))
            .unwrap();
        assert_eq!(
            r.sslmode,
            SslMode::Require,
            "PGSSLMODE when the string has none"
        );
        assert_eq!(r.root_cert.as_deref(), Some(Path::new("/x y.pem")));
        let e = PgSettings::new("host=db sslmode=verify")
            .resolve(&env_of(&[]))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not one of disable"), "{e}");
    }

    #[test]
    fn password_comes_from_the_config_then_the_environment_then_the_passfile() {
        let dir = tempfile::tempdir().unwrap();
        let pass = dir.path().join("pgpass");
        let mut f = std::fs::File::create(&pass).unwrap();
        writeln!(
            f,
            "# comment\nother:*:*:*:nope\ndb.example:5432:hive:hive:pa\\:ss"
        )
        .unwrap();
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
        let passfile = pass.to_str().unwrap();
        let mut s = PgSettings::new("postgres://hive@db.example/hive");
        let r = s.resolve(&env_of(&[("PGPASSFILE", passfile)])).unwrap();
        assert_eq!(password(&r).as_deref(), Some("pa:ss"));
        let r = s
            .resolve(&env_of(&[("PGPASSFILE", passfile), ("PGPASSWORD", "env")]))
            .unwrap();
        assert_eq!(password(&r).as_deref(), Some("env"));
        s.password = Some("file-key".into());
        let r = s.resolve(&env_of(&[("PGPASSWORD", "env")])).unwrap();
        assert_eq!(password(&r).as_deref(), Some("file-key"));
        assert!(!format!("{s:?}").contains("file-key"));
    }

    #[test]
    fn a_passfile_others_may_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pass = dir.path().join("pgpass");
        std::fs::write(&pass, "*:*:*:*:secret\n").unwrap();
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = PgSettings::new("postgres://hive@db/hive")
            .resolve(&env_of(&[("PGPASSFILE", pass.to_str().unwrap())]))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn a_password_in_the_url_is_seen_and_never_shown() {
        let s = PgSettings::new("postgres://hive:s3cret@db/hive?sslmode=require");
        assert!(s.url_has_password());
        assert!(!PgSettings::new("postgres://hive@db/hive").url_has_password());
        assert!(!format!("{s:?}").contains("s3cret"));
        assert_eq!(
            redact(&s.url),
            "postgres://hive:<hidden>@db/hive?sslmode=require"
        );
    }

    #[test]
    fn every_place_a_password_can_go_is_hidden_and_the_rest_shown() {
        let cases = [
            // The user info: tokio-postgres's password runs to the first `@`;
            // one with an `@` of its own is hidden up to the host's.
            (
                "postgres://hive:pw/x@db/hive",
                "postgres://hive:<hidden>@db/hive",
            ),
            (
                "postgres://hive:p?w@db/hive",
                "postgres://hive:<hidden>@db/hive",
            ),
            (
                "postgres://hive:p@ss@db/hive",
                "postgres://hive:<hidden>@db/hive",
            ),
            ("postgres://hive@db/hive", "postgres://hive@db/hive"),
            // A query parameter, its key escaped or not.
            (
                "postgres://hive@db/hive?password=pw&sslmode=require",
                "postgres://hive@db/hive?password=<hidden>&sslmode=require",
            ),
            (
                "postgresql://hive@db/hive?sslmode=disable&pass%77ord=pw",
                "postgresql://hive@db/hive?sslmode=disable&pass%77ord=<hidden>",
            ),
            (
                "postgres://db/hive?x&password=pw",
                "postgres://db/hive?x&password=<hidden>",
            ),
            (
                "postgres://db/hive?password=p@w",
                "postgres://db/hive?password=<hidden>",
            ),
            ("mysql://hive:pw@db/hive", "mysql://hive:<hidden>@db/hive"),
            // key=value strings: quoted, escaped, spaced, or not parsing.
            (
                "host=db user=hive password=pw dbname=hive",
                "host=db user=hive password=<hidden> dbname=hive",
            ),
            (
                "host=db password = 'a b\\' c' dbname=hive",
                "host=db password = <hidden> dbname=hive",
            ),
            ("password=a\\ b host=db", "password=<hidden> host=db"),
            ("host=db password='pw", "host=db <hidden>"),
            ("host=db password", "host=db <hidden>"),
            ("host=db garbage", "host=db garbage"),
            (
                "host=db application_name=password",
                "host=db application_name=password",
            ),
            ("", ""),
        ];
        for (url, shown) in cases {
            assert_eq!(redact(url), shown, "{url}");
        }
        // What tokio-postgres takes as the password is not in what is shown.
        for (url, password) in [
            ("postgres://hive:pw/x@db/hive", "pw/x"),
            ("host=db password = 'a b\\' c' dbname=hive", "a b' c"),
            ("password=a\\ b host=db", "a b"),
        ] {
            let config = tokio_postgres::Config::from_str(url).unwrap();
            assert_eq!(config.get_password(), Some(password.as_bytes()), "{url}");
            let shown = redact(url);
            assert!(
                !shown.contains(password) && !shown.contains(" b"),
                "{url}: {shown}"
            );
        }
    }
}
