//! Starting the server: script, log, listener, port file, signals.

use crate::error::SimError;
use crate::record::Recorder;
use crate::script::Script;
use crate::server::{self, AppState};
use std::future::IntoFuture;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Command-line settings of the simulator.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to bind; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Script file; the built-in script when `None`.
    pub script: Option<PathBuf>,
    /// File that receives the bound address (`127.0.0.1:PORT`) once listening.
    pub port_file: Option<PathBuf>,
    /// File that receives every request as a JSON line.
    pub log: Option<PathBuf>,
    /// File that receives a fresh control token (mode 0600); without it the `/_sim/*` controls are off.
    pub control_token_file: Option<PathBuf>,
}

/// Loads the script at `path`, or the built-in one.
pub fn load_script(path: Option<&Path>) -> Result<Script, SimError> {
    let Some(path) = path else {
        return Ok(Script::builtin());
    };
    let text = std::fs::read_to_string(path).map_err(|cause| SimError::ReadScript {
        path: path.to_path_buf(),
        cause,
    })?;
    Script::parse(&text).map_err(|cause| SimError::BadScript {
        path: path.to_path_buf(),
        cause,
    })
}

/// Serves until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), SimError> {
    let script = load_script(config.script.as_deref())?;
    let recorder = Recorder::new(config.log.as_deref()).map_err(|cause| SimError::WriteFile {
        path: config.log.clone().unwrap_or_default(),
        cause,
    })?;
    let bind_error = |cause| SimError::Bind {
        addr: config.listen.to_string(),
        cause,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    let shutdown = shutdown_signal()?;

    println!("listening on http://{addr}");
    // Tests read stdout through a pipe, where Rust buffers; make the line visible now.
    let _ = std::io::stdout().flush();
    let control_token = match &config.control_token_file {
        Some(path) => {
            let token = fresh_token().map_err(|cause| SimError::WriteFile {
                path: path.clone(),
                cause,
            })?;
            write_atomically(path, &format!("{token}\n"))?;
            Some(token)
        }
        None => None,
    };
    // Last, so that a client that sees the address also finds the token.
    if let Some(path) = &config.port_file {
        write_atomically(path, &format!("{addr}\n"))?;
    }
    tracing::info!(%addr, rules = script.rules.len(), "serving");

    let app = server::router(AppState::new(script, recorder, control_token));
    tokio::select! {
        result = axum::serve(listener, app).into_future() => result.map_err(SimError::Serve),
        () = shutdown => {
            tracing::info!("signal received, stopping");
            Ok(())
        }
    }
}

/// 128 random bits from the kernel, as hex.
fn fresh_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes via a temporary file (readable by its owner only) and rename, so a
/// reader never sees half an address.
fn write_atomically(path: &Path, content: &str) -> Result<(), SimError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(content.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|cause| SimError::WriteFile {
            path: path.to_path_buf(),
            cause,
        })
}

/// Resolves on SIGTERM or SIGINT; handlers are installed before it is awaited.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, SimError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(SimError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(SimError::Signal)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
