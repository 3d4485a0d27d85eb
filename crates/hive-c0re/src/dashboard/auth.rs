//! Who may use the dashboard.
//!
//! Every dashboard has a token: `HIVE_DASHBOARD_TOKEN`, or one generated at
//! start. State-changing requests (anything but GET/HEAD) need it, in the
//! `X-Hive-Token` header or the `hive_token` cookie, and must be same-origin
//! (an `Origin` that differs from `Host` is refused), so another site open in
//! the operator's browser cannot act on the hive.
//!
//! On loopback without `HIVE_DASHBOARD_TOKEN` reading is open and the served
//! page embeds the per-start token for its own requests: a cross-origin page
//! cannot read it, and requests whose `Host` is not a loopback name are
//! refused, so DNS rebinding cannot make the page same-origin either.
//! Anywhere else (or with `HIVE_DASHBOARD_TOKEN` set) every request needs the
//! token; opening `/?token=...` once stores it in an HttpOnly cookie.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};

use super::Ctx;
use super::errors::ApiError;

/// Header a page's own requests carry the token in.
pub const TOKEN_HEADER: &str = "x-hive-token";
/// Cookie that carries the token for browsers (and EventSource, which sends no headers).
pub const TOKEN_COOKIE: &str = "hive_token";
/// Environment variable holding a fixed token.
pub const TOKEN_ENV: &str = "HIVE_DASHBOARD_TOKEN";

/// The dashboard's token and what it guards.
#[derive(Debug, Clone)]
pub struct Auth {
    token: String,
    /// Reads need no token (loopback, no `HIVE_DASHBOARD_TOKEN`).
    open_reads: bool,
    /// Bound to loopback: only requests for a loopback host name are answered.
    loopback: bool,
}

impl Auth {
    /// The policy for a dashboard bound to an address; `fixed` is `HIVE_DASHBOARD_TOKEN`.
    pub fn new(loopback: bool, fixed: Option<String>) -> std::io::Result<Self> {
        let fixed = fixed.filter(|t| !t.trim().is_empty());
        let open_reads = loopback && fixed.is_none();
        let token = match fixed {
            Some(t) => t.trim().to_owned(),
            None => random_token()?,
        };
        Ok(Self {
            token,
            open_reads,
            loopback,
        })
    }

    /// Guards reads too: containers that share the host's network reach a loopback
    /// dashboard, and could read the token from a served page.
    pub fn guard_reads(mut self) -> Self {
        self.open_reads = false;
        self
    }

    /// The same policy with a known token.
    #[cfg(test)]
    pub fn with_token(self, token: &str) -> Self {
        Self {
            token: token.to_owned(),
            ..self
        }
    }

    /// The token (embedded in served pages; printed at start when it guards reads).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// True when reading needs the token too.
    pub fn guards_reads(&self) -> bool {
        !self.open_reads
    }

    fn matches(&self, candidate: &str) -> bool {
        constant_time_eq(candidate.as_bytes(), self.token.as_bytes())
    }

    /// True when the request carries the token in the header or the cookie.
    pub fn presented(&self, headers: &HeaderMap) -> bool {
        let by_header = headers
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| self.matches(t));
        by_header || cookie(headers, TOKEN_COOKIE).is_some_and(|t| self.matches(&t))
    }
}

/// 32 bytes from the kernel's random source, as hex.
fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares without stopping at the first difference, so timing does not leak the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name`, if sent.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
}

/// The host part of a `Host` value (`127.0.0.1:80`, `[::1]:80`, `localhost`).
fn host_name(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// True for `localhost`, `*.localhost` and loopback IPs.
pub fn is_loopback_host(authority: &str) -> bool {
    let h = host_name(authority).to_ascii_lowercase();
    h == "localhost"
        || h.ends_with(".localhost")
        || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// True when `origin` (`scheme://host[:port]`) names the same host and port as `host`.
pub fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let authority = authority.trim_end_matches('/');
    // Browsers leave the default port out of Origin; some clients put it in Host.
    let strip = |a: &str| -> String {
        let a = a.to_ascii_lowercase();
        let default = if scheme.eq_ignore_ascii_case("https") {
            ":443"
        } else {
            ":80"
        };
        a.strip_suffix(default).map(str::to_owned).unwrap_or(a)
    };
    strip(authority) == strip(host)
}

/// Why a state-changing request is refused, if it is.
pub fn check_write(auth: &Auth, headers: &HeaderMap) -> Result<(), ApiError> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !host.is_some_and(|h| same_origin(origin, h)) {
            return Err(ApiError::forbidden(format!(
                "refused a cross-origin request (Origin {origin:?}, Host {:?}): use the dashboard's own page",
                host.unwrap_or("")
            )));
        }
    }
    if !auth.presented(headers) {
        return Err(ApiError::forbidden(
            "this request needs the dashboard token (X-Hive-Token header or hive_token cookie): reload the dashboard page; \
             if hive-c0re restarted, its token changed",
        ));
    }
    Ok(())
}

/// Applies the policy to every request before it reaches a route.
pub(crate) async fn guard(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    let auth = &ctx.auth;
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth.loopback && !is_loopback_host(host) {
        return ApiError::forbidden(format!(
            "this dashboard listens on loopback and answers only requests for localhost, not {host:?}: open it as http://127.0.0.1:PORT/"
        ))
        .into_response();
    }
    let path = req.uri().path();
    // Built front-end files hold no hive data.
    if path.starts_with("/assets/") {
        return next.run(req).await;
    }
    let reading = req.method() == Method::GET || req.method() == Method::HEAD;
    if reading
        && !path.starts_with("/api/")
        && let Some(t) = query_token(req.uri().query())
    {
        return adopt_token(auth, &t, path);
    }
    if !reading {
        if let Err(e) = check_write(auth, headers) {
            return e.into_response();
        }
    } else if auth.guards_reads()
        && !auth.presented(headers)
        // A WebSocket cannot send headers from a browser: its upgrade may carry ?token=.
        && !query_token(req.uri().query()).is_some_and(|t| auth.matches(&t))
    {
        if path.starts_with("/api/") {
            return ApiError::forbidden(
                "this dashboard needs its token: open the dashboard as /?token=TOKEN first",
            )
            .into_response();
        }
        return (
            StatusCode::FORBIDDEN,
            Html(super::pages::token_needed_page()),
        )
            .into_response();
    }
    next.run(req).await
}

fn query_token(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| v.to_owned())
}

/// `?token=` on a page: a right token becomes the cookie and the URL loses it.
fn adopt_token(auth: &Auth, token: &str, path: &str) -> Response {
    if !auth.matches(token) {
        return (
            StatusCode::FORBIDDEN,
            Html(super::pages::token_needed_page()),
        )
            .into_response();
    }
    let cookie = format!(
        "{TOKEN_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        auth.token
    );
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, path.to_owned()),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A header map from name/value pairs.
    pub(crate) fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn loopback_without_env_token_opens_reads_only() {
        let a = Auth::new(true, None).unwrap();
        assert!(!a.guards_reads());
        assert_eq!(a.token().len(), 64);
        assert_ne!(
            a.token(),
            Auth::new(true, None).unwrap().token(),
            "tokens are per start"
        );
        assert!(Auth::new(false, None).unwrap().guards_reads());
        let fixed = Auth::new(true, Some("sesame".into())).unwrap();
        assert!(fixed.guards_reads());
        assert_eq!(fixed.token(), "sesame");
        let blank = Auth::new(true, Some("  ".into())).unwrap();
        assert!(!blank.guards_reads(), "an empty env token is no token");
        let shared = Auth::new(true, None).unwrap().guard_reads();
        assert!(
            shared.guards_reads(),
            "containers on the host's network must not read a loopback dashboard"
        );
    }

    #[test]
    fn token_by_header_or_cookie() {
        let a = Auth::new(false, Some("sesame".into())).unwrap();
        assert!(a.presented(&headers(&[("x-hive-token", "sesame")])));
        assert!(a.presented(&headers(&[("cookie", "a=b; hive_token=sesame")])));
        assert!(!a.presented(&headers(&[("x-hive-token", "sesam")])));
        assert!(!a.presented(&headers(&[("cookie", "hive_token=sesame2")])));
        assert!(!a.presented(&HeaderMap::new()));
    }

    #[test]
    fn writes_need_token_and_same_origin() {
        let a = Auth::new(true, Some("t".into())).unwrap();
        let host = ("host", "127.0.0.1:7878");
        let tok = ("x-hive-token", "t");
        assert!(
            check_write(&a, &headers(&[host, tok])).is_ok(),
            "no Origin is fine"
        );
        let same = [host, tok, ("origin", "http://127.0.0.1:7878")];
        assert!(check_write(&a, &headers(&same)).is_ok());
        let cross = [host, tok, ("origin", "http://evil.example")];
        let e = check_write(&a, &headers(&cross)).unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        let other_port = [host, tok, ("origin", "http://127.0.0.1:9999")];
        assert!(check_write(&a, &headers(&other_port)).is_err());
        let null = [host, tok, ("origin", "null")];
        assert!(check_write(&a, &headers(&null)).is_err());
        let no_token = [host, ("origin", "http://127.0.0.1:7878")];
        let e = check_write(&a, &headers(&no_token)).unwrap_err();
        assert!(
            e.message.contains("needs the dashboard token"),
            "{}",
            e.message
        );
    }

    #[test]
    fn origin_comparison_knows_default_ports() {
        assert!(same_origin("http://hive.example", "hive.example:80"));
        assert!(same_origin("https://hive.example:443", "hive.example"));
        assert!(same_origin("http://HIVE.example:8080", "hive.example:8080"));
        assert!(!same_origin("https://hive.example", "hive.example:80"));
    }

    #[test]
    fn loopback_hosts() {
        let yes = [
            "127.0.0.1:7878",
            "localhost",
            "localhost:1",
            "[::1]:7878",
            "127.1.2.3",
            "hive.localhost:80",
        ];
        for h in yes {
            assert!(is_loopback_host(h), "{h}");
        }
        let no = [
            "evil.example",
            "evil.example:7878",
            "10.0.0.1:7878",
            "",
            "localhost.evil.example",
        ];
        for h in no {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn cookie_and_query_parsing() {
        let h = headers(&[("cookie", "x=1;hive_token= abc ")]);
        assert_eq!(cookie(&h, "hive_token").as_deref(), Some("abc"));
        assert_eq!(query_token(Some("a=1&token=xyz")).as_deref(), Some("xyz"));
        assert_eq!(query_token(Some("tokens=1")), None);
    }
}
