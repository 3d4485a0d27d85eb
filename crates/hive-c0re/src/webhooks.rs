//! The operator's webhooks: their config (`[[webhooks]]` in `hive.toml`), the
//! request each format makes of a notification, and the one HTTP client that
//! sends it (hyper over TCP, rustls for https, a time limit on the whole).
//!
//! Nothing here touches the store: `hive/notifications.rs` keeps the queue and
//! calls [`request`] and [`send`]. A request is built from the stored
//! notification, whose text is an agent's words: it goes only into bodies
//! that a serializer writes (JSON) or as the whole plain-text body (ntfy),
//! never into a header or a URL, so it cannot add a header or a field.
//! Secrets go only where their format puts them (the signature, an
//! `Authorization` header) and never into an error or a log line.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hive_sh4re::notification::{Notification, NotificationKind, WebhookFormat};
use hive_sh4re::secret::{OPERATOR_ONLY_PREFIX, SecretName};
use hmac::{KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

/// Longest a delivery may take, connection and answer included.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The first retry's delay; each further one doubles, up to [`RETRY_MAX`].
pub const RETRY_BASE: Duration = Duration::from_secs(2);
/// The longest delay between two attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(15 * 60);
/// Failed attempts at one delivery after which the operator hears that its
/// webhook is failing (about eight minutes of retries), if it has delivered
/// nothing for [`FAILING_FOR`] either: one that delivers the rest refuses
/// only that one, and its status says so.
pub const FAILING_AFTER: u32 = 9;
/// Failed attempts at one delivery of an agent's words (a message, a
/// question) after which it is given up when the webhook delivered others
/// meanwhile (within [`FAILING_FOR`]): a receiver that refuses only some
/// bodies (a filter in front of it) would otherwise have an agent's refused
/// messages retried for the whole age limit, each one ahead of new
/// notifications. About 45 minutes of retries. The hive's own notices are
/// never given up.
pub const DROP_AFTER: u32 = 12;
/// How long a webhook has delivered nothing before it counts as failing.
pub const FAILING_FOR: Duration = Duration::from_secs(8 * 60);
/// The header of a `json` webhook's signature.
pub const SIGNATURE_HEADER: &str = "X-Hyperhive-Signature";

/// One `[[webhooks]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: Option<String>,
    url: String,
    format: WebhookFormat,
    kinds: Option<Vec<String>>,
    secret: Option<String>,
    room: Option<String>,
}

/// A configured webhook, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    /// Its name: its queue's key (`webhook-N` when the config names none).
    pub name: String,
    /// Where it posts (matrix: the homeserver's base URL).
    pub url: String,
    pub format: WebhookFormat,
    /// The kinds it wants.
    pub kinds: Vec<NotificationKind>,
    /// The operator's secret holding its key (json), token (matrix, ntfy).
    pub secret: Option<SecretName>,
    /// The Matrix room id.
    pub room: Option<String>,
}

impl Webhook {
    /// Scheme and host of its URL: what status views show (a Slack URL's path is its secret).
    pub fn target(&self) -> String {
        match self.url.parse::<Uri>() {
            Ok(u) => format!(
                "{}://{}",
                u.scheme_str().unwrap_or("http"),
                u.authority().map(|a| a.as_str()).unwrap_or("")
            ),
            Err(_) => "(bad url)".to_owned(),
        }
    }
}

/// The webhooks and what their links need.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Webhooks {
    pub hooks: Vec<Webhook>,
    /// The dashboard's public URL (`public_url`): links are absolute with it, paths without.
    pub public_url: Option<String>,
}

impl Webhooks {
    /// The names of the webhooks that want `kind`.
    pub fn wanting(&self, kind: NotificationKind) -> Vec<&str> {
        self.hooks
            .iter()
            .filter(|h| h.kinds.contains(&kind))
            .map(|h| h.name.as_str())
            .collect()
    }

    /// The webhook of this name.
    pub fn get(&self, name: &str) -> Option<&Webhook> {
        self.hooks.iter().find(|h| h.name == name)
    }

    /// A dashboard path as the webhooks link it.
    pub fn link(&self, path: &str) -> String {
        match &self.public_url {
            Some(base) => format!("{}{path}", base.trim_end_matches('/')),
            None => path.to_owned(),
        }
    }
}

/// Reads the `webhooks` value of `hive.toml` (an array of tables); a sentence on error.
pub fn parse(value: &toml::Value) -> Result<Vec<Webhook>, String> {
    let raws: Vec<Raw> = value.clone().try_into().map_err(|e: toml::de::Error| {
        format!(
            "`webhooks` must be a list of tables like [[webhooks]] url = \"https://...\" format = \"json\" ({})",
            e.message()
        )
    })?;
    let mut hooks: Vec<Webhook> = Vec::new();
    for (i, r) in raws.into_iter().enumerate() {
        let name = r.name.unwrap_or_else(|| format!("webhook-{}", i + 1));
        let at = format!("webhook {name:?}");
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(format!(
                "{at}: a name is 1 to 64 characters with no control character"
            ));
        }
        if hooks.iter().any(|h| h.name == name) {
            return Err(format!(
                "{at}: two webhooks have this name; names must differ"
            ));
        }
        let uri: Uri = r
            .url
            .parse()
            .map_err(|_| format!("{at}: url is not a URL; write it as https://host/path"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!(
                "{at}: url must be an http:// or https:// URL with a host"
            ));
        }
        // User info is neither sent as a login nor fit for a Host header, and
        // status views show the URL's authority: refuse it rather than leak it.
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(format!(
                "{at}: url holds a user name or password (user:password@host), which hyperhive \
                 does not send and would show in status: leave it out and give the key or \
                 token as the webhook's secret"
            ));
        }
        let kinds = match r.kinds {
            None => NotificationKind::ALL.to_vec(),
            Some(ks) => ks
                .iter()
                .map(|k| {
                    NotificationKind::parse(k).ok_or_else(|| {
                        let all: Vec<&str> =
                            NotificationKind::ALL.iter().map(|k| k.as_str()).collect();
                        format!("{at}: unknown kind {k:?}; the kinds are {}", all.join(", "))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let secret = match r.secret {
            None => None,
            Some(s) => {
                let n = SecretName::parse(&s).map_err(|e| format!("{at}: secret: {e}"))?;
                if !s.starts_with(OPERATOR_ONLY_PREFIX) {
                    return Err(format!(
                        "{at}: secret {s} must be named {OPERATOR_ONLY_PREFIX}... : only those \
                         secrets are kept from the agents (hive-c0re secret set {OPERATOR_ONLY_PREFIX}{s})"
                    ));
                }
                Some(n)
            }
        };
        match r.format {
            WebhookFormat::Json if secret.is_none() => {
                return Err(format!(
                    "{at}: a json webhook is signed: name the secret that holds its key (secret = \"WEBHOOK_...\")"
                ));
            }
            WebhookFormat::Matrix if secret.is_none() || r.room.is_none() => {
                return Err(format!(
                    "{at}: a matrix webhook needs room = \"!id:server\" and the secret that holds its access token"
                ));
            }
            _ => {}
        }
        if let Some(room) = &r.room
            && (room.is_empty() || room.chars().any(|c| c.is_control() || c == '/'))
        {
            return Err(format!(
                "{at}: room must be a room id such as !abc:example.org"
            ));
        }
        hooks.push(Webhook {
            name,
            url: r.url,
            format: r.format,
            kinds,
            secret,
            room: r.room,
        });
    }
    Ok(hooks)
}

/// One HTTP request to make.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What a header value may hold: visible ASCII and spaces, nothing that ends a line.
pub fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                ' '
            }
        })
        .collect::<String>()
        .trim()
        .chars()
        .take(200)
        .collect()
}

/// Slack's mrkdwn: `&`, `<`, `>` escaped, so an agent's words cannot make a
/// link or an `@channel`.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One line for a chat: what, about whom, the text (quoted), and the link.
fn chat_line(n: &Notification, link: &str) -> (String, String) {
    let head = match &n.agent {
        // ASCII only: ntfy's Title header carries it.
        Some(a) => format!("{} ({a})", n.kind.title()),
        None => n.kind.title().to_owned(),
    };
    (head, format!("{}\n{link}", quoted(&n.text)))
}

/// Each line of a notification's text behind `> `: the text holds an
/// agent's words, and in a chat, lines of its own that look like another
/// notification (a title, a link to approve) would pass for the hive's.
fn quoted(text: &str) -> String {
    text.lines()
        .map(|l| format!("> {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A Matrix room id in a path segment.
fn path_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `sha256=HEX` of the body under `key`: what `X-Hyperhive-Signature` carries.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(body);
    format!(
        "sha256={}",
        crate::hex::encode(&mac.finalize().into_bytes())
    )
}

/// The request `hook` makes for `n` (its `link` already absolute or a path),
/// with its secret's value if it names one.
pub fn request(hook: &Webhook, n: &Notification, secret: Option<&str>) -> Outgoing {
    let bearer = |h: &mut Vec<(String, String)>| {
        if let Some(s) = secret {
            h.push(("Authorization".into(), format!("Bearer {}", header_safe(s))));
        }
    };
    match hook.format {
        WebhookFormat::Json => {
            let body = serde_json::to_vec(&serde_json::json!({
                "kind": n.kind,
                "agent": n.agent,
                "text": n.text,
                "link": n.link,
                "ts": n.ts,
                "id": n.id,
            }))
            .expect("a notification serializes");
            let mut headers = vec![("Content-Type".into(), "application/json".into())];
            if let Some(key) = secret {
                headers.push((SIGNATURE_HEADER.into(), signature(key.as_bytes(), &body)));
            }
            Outgoing {
                method: "POST",
                url: hook.url.clone(),
                headers,
                body,
            }
        }
        WebhookFormat::Ntfy => {
            let (title, _) = chat_line(n, &n.link);
            let mut headers = vec![
                ("Content-Type".into(), "text/plain; charset=utf-8".into()),
                ("Title".into(), header_safe(&title)),
                (
                    "Priority".into(),
                    if n.kind.urgent() { "high" } else { "default" }.into(),
                ),
                ("Tags".into(), header_safe(n.kind.as_str())),
            ];
            // ntfy takes only a URL as a click action.
            if n.link.starts_with("http://") || n.link.starts_with("https://") {
                headers.push(("Click".into(), header_safe(&n.link)));
            }
            bearer(&mut headers);
            Outgoing {
                method: "POST",
                url: hook.url.clone(),
                headers,
                body: n.text.clone().into_bytes(),
            }
        }
        WebhookFormat::Slack => {
            let (head, _) = chat_line(n, &n.link);
            // Escaped first: a `>` of the agent's is `&gt;`, only ours quote.
            let text = format!(
                "*{}*\n{}\n{}",
                slack_escape(&head),
                quoted(&slack_escape(&n.text)),
                slack_escape(&n.link)
            );
            Outgoing {
                method: "POST",
                url: hook.url.clone(),
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: serde_json::to_vec(&serde_json::json!({ "text": text }))
                    .expect("a string serializes"),
            }
        }
        WebhookFormat::Matrix => {
            let (head, rest) = chat_line(n, &n.link);
            let room = path_segment(hook.room.as_deref().unwrap_or_default());
            // The same notification always has the same transaction id, so a retry is idempotent.
            let txn = format!("hyperhive-{}", n.id);
            let mut headers = vec![("Content-Type".into(), "application/json".into())];
            bearer(&mut headers);
            Outgoing {
                method: "PUT",
                url: format!(
                    "{}/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}",
                    hook.url.trim_end_matches('/')
                ),
                headers,
                // An explicit empty mention list: without it, `@room` or a
                // member's name in an agent's words would notify them.
                body: serde_json::to_vec(&serde_json::json!({
                    "msgtype": "m.text",
                    "body": format!("{head}\n{rest}"),
                    "m.mentions": {},
                }))
                .expect("a string serializes"),
            }
        }
    }
}

/// The delay before attempt `attempts + 1`, after `attempts` failures.
pub fn backoff(attempts: u32) -> Duration {
    RETRY_BASE
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(16))
        .min(RETRY_MAX)
}

/// Sends a request; Err says why it failed in words that hold no secret
/// (a status, or what went wrong with the connection, never the URL).
pub async fn send(req: &Outgoing) -> Result<(), String> {
    match tokio::time::timeout(TIMEOUT, exchange(req)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} s", TIMEOUT.as_secs())),
    }
}

async fn exchange(req: &Outgoing) -> Result<(), String> {
    let uri: Uri = req
        .url
        .parse()
        .map_err(|_| "the url is not a URL".to_owned())?;
    let https = uri.scheme_str() == Some("https");
    let host = uri
        .host()
        .ok_or("the url has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let mut builder = hyper::Request::builder()
        .method(req.method)
        .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header(
            "Host",
            uri.authority().map(|a| a.as_str()).unwrap_or(host.as_str()),
        )
        .header("User-Agent", "hyperhive");
    for (k, v) in &req.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let request = builder
        .body(Full::new(Bytes::from(req.body.clone())))
        .map_err(|_| "a header value was refused".to_owned())?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("could not connect: {}", e.kind()))?;
    let status = if https {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|_| "the host is not a valid TLS server name".to_owned())?;
        let tls = tokio_rustls::TlsConnector::from(tls_config())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS failed: {e}"))?;
        round_trip(TokioIo::new(tls), request).await?
    } else {
        round_trip(TokioIo::new(tcp), request).await?
    };
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", status.as_u16()))
    }
}

async fn round_trip<T>(
    io: T,
    request: hyper::Request<Full<Bytes>>,
) -> Result<hyper::StatusCode, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP failed: {e}"))?;
    let conn = tokio::spawn(conn);
    let answer = async {
        let resp = sender
            .send_request(request)
            .await
            .map_err(|e| format!("HTTP failed: {e}"))?;
        let status = resp.status();
        // Read (and drop) a bounded answer, so the server sees it taken.
        let mut body = resp.into_body();
        let mut read = 0usize;
        while read < 64 * 1024 {
            match body.frame().await {
                Some(Ok(f)) => read += f.data_ref().map(|d| d.len()).unwrap_or(0),
                _ => break,
            }
        }
        Ok(status)
    }
    .await;
    conn.abort();
    answer
}

/// rustls with the host's root certificates, built once.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                tracing::warn!(
                    "no root certificates were found on this host: https webhooks will fail"
                );
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(text: &str) -> Result<Vec<Webhook>, String> {
        let t: toml::Table = toml::from_str(text).unwrap();
        parse(&t["webhooks"])
    }

    fn note(text: &str) -> Notification {
        Notification {
            id: 7,
            ts: "2026-01-01T00:00:00Z".into(),
            kind: NotificationKind::Message,
            agent: Some("alice".into()),
            text: text.into(),
            link: "https://hive.example/agents/alice".into(),
            read: false,
        }
    }

    #[test]
    fn config_is_checked() {
        let h = hooks(
            "[[webhooks]]\nurl = \"http://127.0.0.1:9/x\"\nformat = \"json\"\nsecret = \"WEBHOOK_KEY\"\n\
             [[webhooks]]\nname = \"phone\"\nurl = \"https://ntfy.sh/t\"\nformat = \"ntfy\"\nkinds = [\"question\"]\n",
        )
        .unwrap();
        assert_eq!(h[0].name, "webhook-1");
        assert_eq!(h[0].kinds.len(), NotificationKind::ALL.len());
        assert_eq!(h[1].kinds, [NotificationKind::Question]);
        assert_eq!(h[1].target(), "https://ntfy.sh");
        for (bad, says) in [
            ("url = \"ftp://x\"\nformat = \"slack\"", "http://"),
            ("url = \"http://x\"\nformat = \"json\"", "signed"),
            (
                "url = \"http://x\"\nformat = \"json\"\nsecret = \"KEY\"",
                "WEBHOOK_",
            ),
            (
                "url = \"http://x\"\nformat = \"slack\"\nkinds = [\"nope\"]",
                "unknown kind",
            ),
            ("url = \"http://x\"\nformat = \"matrix\"", "room"),
            (
                "url = \"https://me:t0ken@ntfy.example/t\"\nformat = \"ntfy\"",
                "user name or password",
            ),
        ] {
            let e = hooks(&format!("[[webhooks]]\n{bad}\n")).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn agent_text_stays_in_the_body() {
        let evil = "hi\r\nX-Injected: 1\r\n\r\n<!channel> <http://evil|click>\"}";
        for format in [
            WebhookFormat::Json,
            WebhookFormat::Ntfy,
            WebhookFormat::Slack,
            WebhookFormat::Matrix,
        ] {
            let hook = Webhook {
                name: "w".into(),
                url: "http://127.0.0.1:1".into(),
                format,
                kinds: NotificationKind::ALL.to_vec(),
                secret: None,
                room: Some("!r:x".into()),
            };
            let req = request(&hook, &note(evil), Some("s3cret-value"));
            if format == WebhookFormat::Ntfy {
                assert!(
                    req.headers
                        .contains(&("Title".into(), "Message to the operator (alice)".into())),
                    "{:?}",
                    req.headers
                );
            }
            for (k, v) in &req.headers {
                assert!(!v.contains('\n') && !v.contains('\r'), "{format:?} {k}");
                assert!(!v.contains("Injected"), "{format:?} {k}: {v}");
            }
            if format != WebhookFormat::Ntfy {
                let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
                assert!(v.is_object(), "{format:?}");
            }
            if format == WebhookFormat::Slack {
                let body = String::from_utf8(req.body.clone()).unwrap();
                assert!(!body.contains("<!channel>") && body.contains("&lt;!channel&gt;"));
            }
            if matches!(format, WebhookFormat::Slack | WebhookFormat::Matrix) {
                // Every line of the agent's text is quoted: none passes for a title or a link of ours.
                let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
                let shown = v["text"].as_str().or(v["body"].as_str()).unwrap();
                let lines: Vec<&str> = shown.lines().collect();
                assert!(lines.contains(&"> X-Injected: 1"), "{format:?}: {shown}");
                assert!(
                    lines.iter().all(|l| !l.starts_with("X-Injected")),
                    "{format:?}: {shown}"
                );
            }
        }
    }

    #[test]
    fn signature_is_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn matrix_retries_reuse_the_transaction() {
        let hook = Webhook {
            name: "m".into(),
            url: "https://matrix.example/".into(),
            format: WebhookFormat::Matrix,
            kinds: vec![],
            secret: None,
            room: Some("!abc:example.org".into()),
        };
        let a = request(&hook, &note("x"), Some("tok"));
        assert_eq!(
            a.url,
            "https://matrix.example/_matrix/client/v3/rooms/%21abc%3Aexample.org/send/m.room.message/hyperhive-7"
        );
        assert_eq!(a, request(&hook, &note("x"), Some("tok")));
        assert!(
            a.headers
                .contains(&("Authorization".into(), "Bearer tok".into()))
        );
    }

    #[test]
    fn backoff_doubles_and_stops_growing() {
        assert_eq!(backoff(1), RETRY_BASE);
        assert_eq!(backoff(2), RETRY_BASE * 2);
        assert_eq!(backoff(40), RETRY_MAX);
    }
}
