//! How a browser proves it is the operator's: one-time login codes that
//! host.sock hands out, and the login a browser keeps after using one.
//!
//! A login link (`/?login=CODE`, from `hive-c0re urls`) holds a code, never
//! the dashboard's token: good once, for [`CODE_TTL`], and known only to
//! this daemon's memory (as its SHA-256). What stays in a browser's history
//! is a spent code. Using it gives the browser a login, `EXPIRY.NONCE.MAC`:
//! the HMAC-SHA256, under the token, of the dashboard's port, the expiry and
//! a random nonce. A login survives restarts of hive-c0re, ends after
//! [`LOGIN_SECONDS`] or when the token changes, and opens this dashboard's
//! pages only: the token itself, which scripts send in a header, is never in
//! a cookie.

use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

/// How long a login code is good for.
pub const CODE_TTL: Duration = Duration::from_secs(600);
/// How long a browser stays logged in (30 days), across restarts of hive-c0re.
pub const LOGIN_SECONDS: u64 = 30 * 24 * 3600;
/// Most codes outstanding at once; minting one more forgets the oldest.
const MAX_CODES: usize = 64;
/// Bytes of randomness in a code and in a login's nonce.
const CODE_BYTES: usize = 32;
const NONCE_BYTES: usize = 16;

/// Why a login value is no login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Older than [`LOGIN_SECONDS`].
    Expired,
    /// Not made under the current token: the token changed, or it was never one.
    Stale,
}

/// The dashboard's token, its port, and the codes not yet used.
pub struct Logins {
    home: String,
    port: u16,
    token: String,
    /// SHA-256 of each outstanding code, and when it stops being good.
    codes: Mutex<Vec<([u8; 32], Instant)>>,
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
    /// Logins for the dashboard at `home` (`http://HOST:PORT/`) on `port`, under `token`.
    pub fn new(home: String, port: u16, token: String) -> Self {
        Self {
            home,
            port,
            token,
            codes: Mutex::new(Vec::new()),
        }
    }

    /// Whether `candidate` is the token (a script's header), compared in constant time.
    pub fn is_token(&self, candidate: &str) -> bool {
        constant_time_eq(candidate.as_bytes(), self.token.as_bytes())
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
        match codes.iter().position(|(h, _)| constant_time_eq(h, &hash)) {
            Some(i) => {
                codes.remove(i);
                true
            }
            None => false,
        }
    }

    /// A new login, good for [`LOGIN_SECONDS`] from `now_secs` (unix seconds).
    pub fn issue(&self, now_secs: u64) -> io::Result<String> {
        let nonce = crate::hex::random(NONCE_BYTES)?;
        let expiry = now_secs.saturating_add(LOGIN_SECONDS);
        Ok(format!("{expiry}.{nonce}.{}", self.mac(expiry, &nonce)))
    }

    /// Ok when `value` is a login made under this token for this port and not expired at `now_secs`.
    pub fn check(&self, value: &str, now_secs: u64) -> Result<(), Invalid> {
        let mut parts = value.splitn(3, '.');
        let (Some(expiry), Some(nonce), Some(mac)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(Invalid::Stale);
        };
        let Ok(expiry) = expiry.parse::<u64>() else {
            return Err(Invalid::Stale);
        };
        if !constant_time_eq(mac.as_bytes(), self.mac(expiry, nonce).as_bytes()) {
            return Err(Invalid::Stale);
        }
        if expiry <= now_secs {
            return Err(Invalid::Expired);
        }
        Ok(())
    }

    fn mac(&self, expiry: u64, nonce: &str) -> String {
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(self.token.as_bytes())
            .expect("HMAC takes any key");
        mac.update(format!("hive-dashboard-login\0{}\0{expiry}\0{nonce}", self.port).as_bytes());
        crate::hex::encode(&mac.finalize().into_bytes())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<([u8; 32], Instant)>> {
        self.codes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Compares without stopping at the first difference, so timing does not leak a secret.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logins() -> Logins {
        Logins::new("http://127.0.0.1:7878/".into(), 7878, "sesame".into())
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
    fn a_login_is_good_for_its_port_and_token_until_it_expires() {
        let l = logins();
        let now = 1_800_000_000;
        let v = l.issue(now).unwrap();
        assert!(!v.contains("sesame"));
        assert_eq!(l.check(&v, now), Ok(()));
        assert_eq!(l.check(&v, now + LOGIN_SECONDS - 1), Ok(()));
        assert_eq!(l.check(&v, now + LOGIN_SECONDS), Err(Invalid::Expired));
        let renamed = Logins::new("http://127.0.0.1:7878/".into(), 7878, "other".into());
        assert_eq!(
            renamed.check(&v, now),
            Err(Invalid::Stale),
            "the token changed"
        );
        let elsewhere = Logins::new("http://127.0.0.1:9999/".into(), 9999, "sesame".into());
        assert_eq!(
            elsewhere.check(&v, now),
            Err(Invalid::Stale),
            "another port"
        );
        // A later expiry, or another nonce, breaks the MAC.
        let (expiry, rest) = v.split_once('.').unwrap();
        let later = format!("{}.{rest}", expiry.parse::<u64>().unwrap() + 1);
        assert_eq!(l.check(&later, now), Err(Invalid::Stale));
        for junk in ["", "sesame", "1.2", "x.y.z", "1.2.3.4"] {
            assert_eq!(l.check(junk, now), Err(Invalid::Stale), "{junk}");
        }
    }
}
