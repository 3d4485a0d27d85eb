//! How a browser proves it is the operator's: one-time login codes that
//! host.sock hands out, and the login a browser keeps after using one.
//!
//! A login link (`/?login=CODE`, from `hive-c0re urls`) holds a code, never
//! the dashboard's token: good once, for [`CODE_TTL`], and known only to
//! this daemon's memory (as its SHA-256). What stays in a browser's history
//! is a spent code. Using it gives the browser a login in two halves:
//!
//! - a cookie, `EXPIRY.NONCE.MAC`, for pages and assets;
//! - a page key, which the landing page stores in the browser's storage for
//!   the dashboard's own origin (scheme, host and port), and which every
//!   API call, the live stream and the shell must present too.
//!
//! Browsers send a host's cookies to every port of it, so a program
//! listening on another port of the dashboard's host name gets the cookie
//! when the operator's browser visits it; it never gets the page key, so
//! the cookie alone reads no data and changes nothing.
//!
//! Both halves are MACs under a key derived from the dashboard's token and
//! a random login key kept in the state dir (`kept`): a captured login
//! cannot be worked back to either, a login survives restarts of hive-c0re
//! and ends after [`LOGIN_SECONDS`], when the token changes, or when the
//! operator logs every browser out (`hive-c0re logout`, a new login key,
//! which also ends the live streams and shells logins hold open).

pub(crate) mod kept;

use std::io;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

/// How long a login code is good for.
pub const CODE_TTL: Duration = Duration::from_secs(600);
/// How long a browser stays logged in (30 days), across restarts of hive-c0re.
pub const LOGIN_SECONDS: u64 = 30 * 24 * 3600;
/// How far ahead of this host's clock a login's expiry may run (another node's clock).
const SKEW_SECONDS: u64 = 300;
/// Most codes outstanding at once; minting one more forgets the oldest.
const MAX_CODES: usize = 64;
/// Bytes of randomness in a code and in a login's nonce.
const CODE_BYTES: usize = 32;
const NONCE_BYTES: usize = 16;

/// Why a login is no login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Older than [`LOGIN_SECONDS`].
    Expired,
    /// Not made under the current token and login key: the token changed,
    /// every browser was logged out, or it was never one.
    Stale,
    /// A good cookie without its page key.
    NoPageKey,
}

/// A login as the landing page hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The cookie's value.
    pub cookie: String,
    /// The key the page keeps in its origin's storage.
    pub page_key: String,
}

/// The dashboard's token, login key and port, and the codes not yet used.
pub struct Logins {
    home: String,
    port: u16,
    token: String,
    /// The MAC key of logins: HMAC-SHA256 of the token under the login key.
    signing: RwLock<[u8; 32]>,
    /// SHA-256 of each outstanding code, and when it stops being good.
    codes: Mutex<Vec<([u8; 32], Instant)>>,
    /// Counts logouts: a live stream or shell opened before one ends on it,
    /// since the login that opened it no longer holds.
    logouts: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Logins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logins")
            .field("home", &self.home)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Logins {
    /// Logins for the dashboard at `home` (`http://HOST:PORT/`, or the
    /// operator's `public_url`) on `port`,
    /// under `token` and `login_key`.
    pub fn new(home: String, port: u16, token: String, login_key: &str) -> Self {
        let signing = signing_key(&token, login_key);
        Self {
            home,
            port,
            token,
            signing: RwLock::new(signing),
            codes: Mutex::new(Vec::new()),
            logouts: tokio::sync::watch::Sender::new(0),
        }
    }

    /// True when the login links are https (a `public_url` behind TLS): the
    /// cookie is then Secure, never sent over plain http.
    pub fn https(&self) -> bool {
        self.home.starts_with("https://")
    }

    /// Signs logins with `login_key` from now on: every earlier login ends,
    /// and every login link not used yet.
    pub fn replace_login_key(&self, login_key: &str) {
        let signing = signing_key(&self.token, login_key);
        *self.signing.write().unwrap_or_else(|p| p.into_inner()) = signing;
        self.lock().clear();
        self.logouts.send_modify(|n| *n += 1);
    }

    /// Changes at the next logout (see [`Logins::replace_login_key`]).
    pub fn logouts(&self) -> tokio::sync::watch::Receiver<u64> {
        self.logouts.subscribe()
    }

    /// Whether `candidate` is the token (a script's header), compared in constant time.
    pub fn is_token(&self, candidate: &str) -> bool {
        crate::hex::same_secret(candidate.as_bytes(), self.token.as_bytes())
    }

    /// A new login link, good once for [`CODE_TTL`].
    pub fn link(&self) -> io::Result<String> {
        let code = crate::hex::random(CODE_BYTES)?;
        let now = Instant::now();
        let mut codes = self.lock();
        codes.retain(|(_, until)| *until > now);
        if codes.len() >= MAX_CODES {
            codes.remove(0);
        }
        codes.push((Sha256::digest(code.as_bytes()).into(), now + CODE_TTL));
        Ok(format!("{}?login={code}", self.home))
    }

    /// Uses up `code`: true when it was outstanding and still good.
    pub fn redeem(&self, code: &str) -> bool {
        let hash: [u8; 32] = Sha256::digest(code.as_bytes()).into();
        let now = Instant::now();
        let mut codes = self.lock();
        codes.retain(|(_, until)| *until > now);
        match codes
            .iter()
            .position(|(h, _)| crate::hex::same_secret(h, &hash))
        {
            Some(i) => {
                codes.remove(i);
                true
            }
            None => false,
        }
    }

    /// A new login, good for [`LOGIN_SECONDS`] from `now_secs` (unix seconds).
    pub fn issue(&self, now_secs: u64) -> io::Result<Issued> {
        let nonce = crate::hex::random(NONCE_BYTES)?;
        let expiry = now_secs.saturating_add(LOGIN_SECONDS);
        Ok(Issued {
            cookie: format!("{expiry}.{nonce}.{}", self.mac("cookie", expiry, &nonce)),
            page_key: self.mac("page", expiry, &nonce),
        })
    }

    /// Ok when `cookie` is a login of this dashboard's, not expired at
    /// `now_secs`, and, when `page_key` is asked for (`Some`), presented
    /// with its page key.
    pub fn check(
        &self,
        cookie: &str,
        page_key: Option<&str>,
        now_secs: u64,
    ) -> Result<(), Invalid> {
        let mut parts = cookie.splitn(3, '.');
        let (Some(expiry), Some(nonce), Some(mac)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(Invalid::Stale);
        };
        let Ok(expiry) = expiry.parse::<u64>() else {
            return Err(Invalid::Stale);
        };
        if !crate::hex::same_secret(mac.as_bytes(), self.mac("cookie", expiry, nonce).as_bytes()) {
            return Err(Invalid::Stale);
        }
        if expiry <= now_secs {
            return Err(Invalid::Expired);
        }
        // Only this host's or another node's clock ahead of it makes one.
        if expiry > now_secs + LOGIN_SECONDS + SKEW_SECONDS {
            return Err(Invalid::Stale);
        }
        match page_key {
            Some(k)
                if crate::hex::same_secret(
                    k.as_bytes(),
                    self.mac("page", expiry, nonce).as_bytes(),
                ) =>
            {
                Ok(())
            }
            Some(_) => Err(Invalid::NoPageKey),
            None => Ok(()),
        }
    }

    /// The MAC of one half (`what`) of the login with `expiry` and `nonce`.
    fn mac(&self, what: &str, expiry: u64, nonce: &str) -> String {
        let key = *self.signing.read().unwrap_or_else(|p| p.into_inner());
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key");
        mac.update(format!("hive-dashboard-{what}\0{}\0{expiry}\0{nonce}", self.port).as_bytes());
        crate::hex::encode(&mac.finalize().into_bytes())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<([u8; 32], Instant)>> {
        self.codes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The MAC key of logins under `token` and `login_key`.
fn signing_key(token: &str, login_key: &str) -> [u8; 32] {
    let mut mac =
        hmac::Hmac::<Sha256>::new_from_slice(login_key.as_bytes()).expect("HMAC takes any key");
    mac.update(token.as_bytes());
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logins() -> Logins {
        Logins::new(
            "http://127.0.0.1:7878/".into(),
            7878,
            "sesame".into(),
            "key",
        )
    }

    fn code_of(link: &str) -> &str {
        link.rsplit_once("login=").unwrap().1
    }

    #[test]
    fn a_code_logs_in_once_and_holds_no_token() {
        let l = logins();
        let link = l.link().unwrap();
        assert!(link.starts_with("http://127.0.0.1:7878/?login="), "{link}");
        assert!(!link.contains("sesame"));
        let other = l.link().unwrap();
        assert_ne!(link, other);
        assert!(l.redeem(code_of(&link)));
        assert!(!l.redeem(code_of(&link)), "a code is good once");
        assert!(l.redeem(code_of(&other)), "each code on its own");
        assert!(!l.redeem(""));
        assert!(!l.redeem("sesame"), "the token is no code");
    }

    #[test]
    fn the_oldest_code_goes_past_the_bound() {
        let l = logins();
        let first = l.link().unwrap();
        let rest: Vec<String> = (0..MAX_CODES).map(|_| l.link().unwrap()).collect();
        assert!(!l.redeem(code_of(&first)));
        assert!(rest.iter().all(|r| l.redeem(code_of(r))));
    }

    #[test]
    fn a_login_is_good_for_its_port_token_and_key_until_it_expires() {
        let l = logins();
        let now = 1_800_000_000;
        let Issued {
            cookie: v,
            page_key,
        } = l.issue(now).unwrap();
        assert!(!v.contains("sesame") && !page_key.contains("sesame"));
        assert_eq!(l.check(&v, None, now), Ok(()));
        assert_eq!(l.check(&v, Some(&page_key), now), Ok(()));
        assert_eq!(l.check(&v, Some(""), now), Err(Invalid::NoPageKey));
        let other = l.issue(now).unwrap();
        assert_eq!(
            l.check(&v, Some(&other.page_key), now),
            Err(Invalid::NoPageKey),
            "another login's page key"
        );
        assert_eq!(l.check(&v, None, now + LOGIN_SECONDS - 1), Ok(()));
        assert_eq!(
            l.check(&v, None, now + LOGIN_SECONDS),
            Err(Invalid::Expired)
        );
        let check_with = |token: &str, key: &str, port: u16| {
            Logins::new(format!("http://127.0.0.1:{port}/"), port, token.into(), key)
                .check(&v, None, now)
        };
        assert_eq!(
            check_with("other", "key", 7878),
            Err(Invalid::Stale),
            "the token changed"
        );
        assert_eq!(
            check_with("sesame", "new", 7878),
            Err(Invalid::Stale),
            "a new login key"
        );
        assert_eq!(
            check_with("sesame", "key", 9999),
            Err(Invalid::Stale),
            "another port"
        );
        // A later expiry, or another nonce, breaks the MAC.
        let (expiry, rest) = v.split_once('.').unwrap();
        let later = format!("{}.{rest}", expiry.parse::<u64>().unwrap() + 1);
        assert_eq!(l.check(&later, None, now), Err(Invalid::Stale));
        for junk in ["", "sesame", "1.2", "x.y.z", "1.2.3.4"] {
            assert_eq!(l.check(junk, None, now), Err(Invalid::Stale), "{junk}");
        }
        // Logging every browser out, and forgetting the links not used yet.
        let link = l.link().unwrap();
        let logouts = l.logouts();
        l.replace_login_key("new");
        assert!(logouts.has_changed().unwrap(), "open streams hear of it");
        assert_eq!(l.check(&v, Some(&page_key), now), Err(Invalid::Stale));
        assert!(!l.redeem(link.rsplit_once("login=").unwrap().1));
    }

    /// A login signed far into the future (as one made with the signing key
    /// would be) is refused: a login is good for 30 days at most.
    #[test]
    fn a_login_never_runs_past_thirty_days_from_now() {
        let l = logins();
        let now = 1_800_000_000;
        let far = l.issue(now + 10 * LOGIN_SECONDS).unwrap();
        assert_eq!(
            l.check(&far.cookie, Some(&far.page_key), now),
            Err(Invalid::Stale)
        );
        let skewed = l.issue(now + 60).unwrap();
        assert_eq!(l.check(&skewed.cookie, Some(&skewed.page_key), now), Ok(()));
    }
}
