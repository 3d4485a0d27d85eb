//! A local HTTP receiver for the operator's webhooks: it records every
//! request and answers 200 (or 500 to `/json` while told to fail).

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::Value;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Got {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub at: SystemTime,
}

impl Got {
    /// A header's value, by name in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether it carries the `X-Hyperhive-Signature` of its body under `key`.
    pub fn signed_with(&self, key: &str) -> bool {
        use hmac::{KeyInit, Mac};
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(self.body.as_bytes());
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.header("x-hyperhive-signature") == Some(format!("sha256={want}").as_str())
    }

    /// The notification's id and kind, as each format carries them.
    pub fn id_and_kind(&self) -> (String, String) {
        match self.path.as_str() {
            "/json" => {
                let v: Value = serde_json::from_str(&self.body).unwrap();
                (v["id"].to_string(), v["kind"].as_str().unwrap().to_owned())
            }
            "/ntfy" => (String::new(), self.header("Tags").unwrap().to_owned()),
            _ => (String::new(), String::new()),
        }
    }
}

/// What the receiver got, and how it answers.
#[derive(Default)]
pub struct Receiver {
    /// Every request, in order.
    pub got: Mutex<Vec<Got>>,
    /// Requests to `/json` answered 500 before it accepts again.
    pub fail_json: Mutex<u32>,
}

/// Starts the receiver on 127.0.0.1 (a free port) in a thread of its own; its address.
pub fn start_receiver(state: Arc<Receiver>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().fallback(
                move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                    let state = state.clone();
                    async move {
                        let path = uri.path().to_owned();
                        let got = Got {
                            method: method.to_string(),
                            path: if path.starts_with("/_matrix/") {
                                "/matrix".to_owned()
                            } else {
                                path.clone()
                            },
                            headers: headers
                                .iter()
                                .map(|(k, v)| {
                                    (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into())
                                })
                                .collect(),
                            body: String::from_utf8_lossy(&body).into_owned(),
                            at: SystemTime::now(),
                        };
                        let full = uri.to_string();
                        let mut got_all = state.got.lock().unwrap();
                        let mut fail = state.fail_json.lock().unwrap();
                        if path == "/json" && *fail > 0 {
                            *fail -= 1;
                            let mut g = got;
                            g.path = "/json-failed".into();
                            got_all.push(g);
                            return (StatusCode::INTERNAL_SERVER_ERROR, String::new());
                        }
                        let mut g = got;
                        if g.path == "/matrix" {
                            g.headers.push(("x-full-path".into(), full));
                        }
                        got_all.push(g);
                        (StatusCode::OK, "{}".to_owned())
                    }
                },
            );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    addr
}

/// A receiver, and a `hive.toml` (in the returned dir) whose one webhook
/// posts the notifications of `kinds` to it, in Slack's format (which needs
/// no key), at `/slack`.
pub fn slack_receiver(kinds: &[&str]) -> (Arc<Receiver>, tempfile::TempDir, std::path::PathBuf) {
    let recv = Arc::new(Receiver::default());
    let addr = start_receiver(recv.clone());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hive.toml");
    let kinds: Vec<String> = kinds.iter().map(|k| format!("{k:?}")).collect();
    std::fs::write(
        &config,
        format!(
            "[[webhooks]]\nurl = \"http://{addr}/slack\"\nformat = \"slack\"\nkinds = [{}]\n",
            kinds.join(", ")
        ),
    )
    .unwrap();
    (recv, dir, config)
}
