//! Who may use the dashboard: only a browser (or client) that proved it
//! holds the dashboard's token. No page, asset, API answer, stream or shell
//! is served without it, in any runtime, on loopback or not.
//!
//! The operator logs a browser in with a link `hive-c0re urls` prints
//! (`/?login=CODE`; host.sock is the operator's, so holding the link is the
//! proof). The code is good once, for 10 minutes, and is not the token
//! (`crate::login`); that request gets a login back: an HttpOnly,
//! SameSite=Lax cookie, and a landing page whose script keeps the login's
//! page key in the origin's storage and goes on to the page asked for.
//! Pages and assets need the cookie; the API, the live stream and the shell
//! need the page key too ([`KEY_HEADER`], or `key=` in the query where a
//! browser cannot set a header), so the cookie alone, which browsers also
//! send to other ports of the host, opens no data. Scripts send the token
//! in the `X-Hive-Token` header instead.
//! State-changing requests (anything but GET/HEAD) must also be same-origin
//! (an `Origin` that differs from `Host` is refused).
//!
//! A dashboard on loopback answers only requests for a loopback host name,
//! so DNS rebinding cannot make another site same-origin. Every answer
//! carries a content security policy without inline script and forbids
//! framing.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};

use super::Ctx;
use super::errors::ApiError;
use crate::login::{CODE_TTL, Invalid, LOGIN_SECONDS, Logins};

/// Header a script's requests may carry the token in.
pub const TOKEN_HEADER: &str = "x-hive-token";
/// Header the pages' API calls carry their login's page key in.
pub const KEY_HEADER: &str = "x-hive-key";
/// Environment variable holding a fixed token.
pub const TOKEN_ENV: &str = "HIVE_DASHBOARD_TOKEN";

/// What every answer carries: scripts and styles from the dashboard only, no
/// inline script, no framing, no plugin, no form posting elsewhere. Inline
/// styles stay allowed: xterm.js and uPlot set them.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; font-src 'self'; connect-src 'self'; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// How to log in, for every refusal.
pub(crate) fn how_to_log_in() -> String {
    format!(
        "to log in, run `hive-c0re urls` on the hive's host (as root or a member of group {}) \
         and open the login link it prints in this browser",
        crate::host_sock::ADMIN_GROUP
    )
}

/// The dashboard's logins and where it is served.
#[derive(Debug, Clone)]
pub struct Auth {
    logins: Arc<Logins>,
    /// Bound to loopback: only requests for a loopback host name are answered.
    loopback: bool,
    /// The login cookie's name, per port, so two dashboards on one host keep their logins apart.
    cookie: String,
    /// The cookie of before one-time links, which held the token itself.
    old_cookie: String,
    /// What every cookie this sets ends with: `; Secure` behind https.
    attributes: &'static str,
}

/// Why a request is not logged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No cookie and no header.
    NoLogin,
    /// A cookie or header not made with the current token: the token changed since the login.
    StaleLogin,
    /// A login older than 30 days.
    Expired,
    /// A login link used before, too old, or from before a restart.
    UsedLink,
    /// A good cookie on an API call without its page key.
    NoPageKey,
}

impl Refusal {
    /// The sentence a refused client gets: what is wrong and how to log in.
    pub fn sentence(self) -> String {
        let why = match self {
            Self::NoLogin => {
                "this browser is not logged in to this dashboard (it never logged in here, or its login ended after 30 days)".into()
            }
            Self::StaleLogin => {
                "this browser's login is no longer valid: the dashboard's token changed since it logged in \
                 (HIVE_DASHBOARD_TOKEN changed, or the state dir's dashboard.token was removed or replaced), \
                 or the operator logged every browser out (hive-c0re logout)"
                    .into()
            }
            Self::Expired => format!(
                "this browser's login expired ({} days after it logged in)",
                LOGIN_SECONDS / 86_400
            ),
            Self::UsedLink => format!(
                "this login link was used before, is older than {} minutes, or was printed before \
                 hive-c0re restarted: each link logs in one browser, once",
                CODE_TTL.as_secs() / 60
            ),
            Self::NoPageKey => "this request has the login cookie but not the key its login gave this \
                 dashboard's pages (kept in the browser's storage for this address: it was cleared, \
                 or the cookie was sent from somewhere else)"
                .into(),
        };
        format!("{why}; {}", how_to_log_in())
    }
}

impl Auth {
    /// The policy for a dashboard bound to a (loopback or not) address and port.
    pub fn new(loopback: bool, port: u16, logins: Arc<Logins>) -> Self {
        let attributes = if logins.https() {
            "; HttpOnly; SameSite=Lax; Secure"
        } else {
            "; HttpOnly; SameSite=Lax"
        };
        Self {
            logins,
            loopback,
            cookie: format!("hive_login_{port}"),
            old_cookie: format!("hive_token_{port}"),
            attributes,
        }
    }

    /// The logins (host.sock's `urls` mints the links).
    pub fn logins(&self) -> &Arc<Logins> {
        &self.logins
    }

    /// The login cookie's name.
    pub fn cookie_name(&self) -> &str {
        &self.cookie
    }

    /// Ok when the request carries the token in the header, or a login in
    /// the cookie and, for the API (`api`), the login's page key in
    /// [`KEY_HEADER`] or the `key` of `query`.
    pub fn check(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        api: bool,
    ) -> Result<(), Refusal> {
        if let Some(header) = headers.get(TOKEN_HEADER) {
            let token = header.to_str().unwrap_or("");
            return if self.logins.is_token(token) {
                Ok(())
            } else {
                Err(Refusal::StaleLogin)
            };
        }
        let Some(login) = cookie(headers, &self.cookie) else {
            return Err(Refusal::NoLogin);
        };
        let key = api.then(|| {
            headers
                .get(KEY_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .or_else(|| query_param(query, "key"))
                .unwrap_or_default()
        });
        self.logins
            .check(&login, key.as_deref(), now_secs())
            .map_err(|why| match why {
                Invalid::Expired => Refusal::Expired,
                Invalid::Stale => Refusal::StaleLogin,
                Invalid::NoPageKey => Refusal::NoPageKey,
            })
    }

    /// The `Set-Cookie` value that logs a browser in. Lax, so a link to the
    /// dashboard opened from a chat or a mail lands logged in; what changes
    /// anything is a POST (or the shell's WebSocket), which also needs the
    /// dashboard's own Origin.
    fn login_cookie(&self) -> std::io::Result<(String, String)> {
        let issued = self.logins.issue(now_secs())?;
        Ok((
            format!(
                "{}={}; Path=/; Max-Age={LOGIN_SECONDS}{}",
                self.cookie, issued.cookie, self.attributes
            ),
            issued.page_key,
        ))
    }
}

/// Unix seconds now.
fn now_secs() -> u64 {
    u64::try_from(crate::clock::now_ms() / 1000).unwrap_or(0)
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

/// Refuses a request whose `Origin`, when sent, is not the dashboard's own.
pub fn check_origin(headers: &HeaderMap) -> Result<(), ApiError> {
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
    Ok(())
}

/// Applies the policy to every request before it reaches a route, and hardens every answer.
pub(crate) async fn guard(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    let mut resp = decide(&ctx.auth, req, next).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // A page's address (a login link before its redirect) never leaves in a Referer.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

async fn decide(auth: &Auth, req: Request, next: Next) -> Response {
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
    let api = path.starts_with("/api/");
    let reading = req.method() == Method::GET || req.method() == Method::HEAD;
    if reading
        && !api
        && let Some(code) = query_code(req.uri().query())
    {
        return if auth.logins.redeem(&code) {
            super::conns::prove(&req);
            logged_in(auth, path)
        } else {
            refused(Refusal::UsedLink, false)
        };
    }
    if let Err(why) = auth.check(headers, req.uri().query(), api) {
        return refused(why, api || !reading);
    }
    if !reading && let Err(e) = check_origin(headers) {
        return e.into_response();
    }
    super::conns::prove(&req);
    next.run(req).await
}

/// 401: JSON for the API, else a page that says how to log in (never the token).
fn refused(why: Refusal, json: bool) -> Response {
    if json {
        return ApiError::new(StatusCode::UNAUTHORIZED, why.sentence()).into_response();
    }
    (
        StatusCode::UNAUTHORIZED,
        Html(super::pages::login_page(&why.sentence())),
    )
        .into_response()
}

/// The login code of a login link's query.
fn query_code(query: Option<&str>) -> Option<String> {
    query_param(query, "login")
}

/// The value of `name` in a query string, as sent.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// A good login link: the cookie, and a landing page that keeps the page
/// key and goes on to the same page without the code in its address.
fn logged_in(auth: &Auth, path: &str) -> Response {
    // `//host/` would lead off the dashboard.
    let path = if path.starts_with("//") { "/" } else { path };
    match auth.login_cookie() {
        Ok((cookie, page_key)) => {
            let mut resp = (
                StatusCode::OK,
                [(header::SET_COOKIE, cookie)],
                Html(super::pages::landing_page(&page_key, path)),
            )
                .into_response();
            // Browsers keep sending the old cookie, the token itself, to
            // every port of the host: it goes.
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{}=; Path=/; Max-Age=0{}",
                auth.old_cookie, auth.attributes
            )) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
            resp
        }
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not make a login (no random bytes from the kernel: {e}); open a new link from `hive-c0re urls`"),
        )
        .into_response(),
    }
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

    /// The policy for port 7878 under the token "sesame".
    pub(crate) fn auth(port: u16, token: &str) -> Auth {
        let home = format!("http://127.0.0.1:{port}/");
        Auth::new(
            true,
            port,
            Arc::new(Logins::new(home, port, token.into(), "login-key")),
        )
    }

    /// The login a browser got for `auth`: its cookie header and its page key.
    pub(crate) fn login(auth: &Auth) -> (String, String) {
        let (set, key) = auth.login_cookie().unwrap();
        (set.split(';').next().unwrap().to_owned(), key)
    }

    /// The login a browser got for `auth`, as its cookie header.
    pub(crate) fn login_cookie(auth: &Auth) -> String {
        login(auth).0
    }

    #[test]
    fn token_by_header_or_a_login_in_this_ports_cookie() {
        let a = auth(7878, "sesame");
        let page = |h: &HeaderMap| a.check(h, None, false);
        assert_eq!(page(&headers(&[("x-hive-token", "sesame")])), Ok(()));
        assert_eq!(
            a.check(&headers(&[("x-hive-token", "sesame")]), None, true),
            Ok(()),
            "a script needs no page key"
        );
        let (login, key) = login(&a);
        assert!(login.starts_with("hive_login_7878="), "{login}");
        assert!(
            !login.contains("sesame") && !key.contains("sesame"),
            "the login holds no token: {login}"
        );
        let with = |c: &str| page(&headers(&[("cookie", c)]));
        assert_eq!(with(&format!("a=b; {login}")), Ok(()));
        assert_eq!(
            page(&headers(&[("x-hive-token", "sesam")])),
            Err(Refusal::StaleLogin)
        );
        assert_eq!(
            with("hive_login_7878=sesame"),
            Err(Refusal::StaleLogin),
            "the token is no login"
        );
        let old = login_cookie(&auth(7878, "before"));
        assert_eq!(with(&old), Err(Refusal::StaleLogin), "the token changed");
        let theirs = login_cookie(&auth(9999, "sesame"));
        assert_eq!(
            with(&theirs),
            Err(Refusal::NoLogin),
            "another dashboard's cookie is no login here"
        );
        let renamed = theirs.replace("hive_login_9999", "hive_login_7878");
        assert_eq!(
            with(&renamed),
            Err(Refusal::StaleLogin),
            "another port's login"
        );
        assert_eq!(page(&HeaderMap::new()), Err(Refusal::NoLogin));

        // The API wants the page key too, in its header or the query.
        let api = |h: &[(&'static str, &str)], q: Option<&str>| a.check(&headers(h), q, true);
        let cookie = ("cookie", login.as_str());
        assert_eq!(
            api(&[cookie], None),
            Err(Refusal::NoPageKey),
            "the cookie alone"
        );
        assert_eq!(api(&[cookie, ("x-hive-key", &key)], None), Ok(()));
        assert_eq!(api(&[cookie], Some(&format!("rows=2&key={key}"))), Ok(()));
        assert_eq!(
            api(&[cookie, ("x-hive-key", "sesame")], None),
            Err(Refusal::NoPageKey)
        );
        assert_eq!(
            api(&[("x-hive-key", &key)], None),
            Err(Refusal::NoLogin),
            "the key alone"
        );

        let (c, _) = a.login_cookie().unwrap();
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax"), "{c}");
    }

    #[test]
    fn refusals_say_how_to_log_in_and_never_hold_the_token() {
        for why in [
            Refusal::NoLogin,
            Refusal::StaleLogin,
            Refusal::Expired,
            Refusal::UsedLink,
            Refusal::NoPageKey,
        ] {
            let s = why.sentence();
            assert!(s.contains("hive-c0re urls"), "{s}");
            assert!(
                !s.contains("loopback"),
                "the reason is the login, not the bind: {s}"
            );
        }
    }

    #[test]
    fn origins_must_match_when_sent() {
        let host = ("host", "127.0.0.1:7878");
        assert!(check_origin(&headers(&[host])).is_ok(), "no Origin is fine");
        assert!(check_origin(&headers(&[host, ("origin", "http://127.0.0.1:7878")])).is_ok());
        let e = check_origin(&headers(&[host, ("origin", "http://evil.example")])).unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(check_origin(&headers(&[host, ("origin", "http://127.0.0.1:9999")])).is_err());
        assert!(check_origin(&headers(&[host, ("origin", "null")])).is_err());
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
        let h = headers(&[("cookie", "x=1;hive_token_1= abc ")]);
        assert_eq!(cookie(&h, "hive_token_1").as_deref(), Some("abc"));
        assert_eq!(query_code(Some("a=1&login=xyz")).as_deref(), Some("xyz"));
        assert_eq!(query_code(Some("logins=1")), None);
        assert_eq!(query_code(Some("token=1")), None);
    }
}
