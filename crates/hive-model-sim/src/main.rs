//! `hive-model-sim`: thin command-line wrapper over the library.

use anyhow::Context;
use clap::Parser;
use hive_model_sim::{Config, SimError, run, script};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Scripted Anthropic Messages API server for running the claude CLI offline.
#[derive(Debug, Parser)]
#[command(name = "hive-model-sim", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Script of rules (TOML, see README.md); the built-in script when absent.
    #[arg(long, value_name = "FILE")]
    script: Option<PathBuf>,
    /// Write the bound address (127.0.0.1:PORT) to FILE once listening.
    #[arg(long, value_name = "FILE")]
    port_file: Option<PathBuf>,
    /// Append every /v1/messages request to FILE as a JSON line.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Write a fresh control token to FILE (mode 0600); /_sim/* requests must
    /// carry it in the x-sim-token header. Without it the controls are off.
    #[arg(long, value_name = "FILE")]
    control_token_file: Option<PathBuf>,
    /// Check the script and exit: 0 when valid, 2 when not.
    #[arg(long)]
    check: bool,
    /// Print the built-in script and exit.
    #[arg(long)]
    print_default_script: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("hive_model_sim=info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match real_main(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hive-model-sim: {err:#}");
            let script_error = err
                .downcast_ref::<SimError>()
                .is_some_and(SimError::is_script_error);
            ExitCode::from(if script_error { 2 } else { 1 })
        }
    }
}

fn real_main(args: Args) -> anyhow::Result<()> {
    if args.print_default_script {
        print!("{}", script::DEFAULT_SCRIPT);
        return Ok(());
    }
    if args.check {
        let script = hive_model_sim::run::load_script(args.script.as_deref())?;
        println!("script ok: {} rule(s)", script.rules.len());
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(Config {
        listen: args.listen,
        script: args.script,
        port_file: args.port_file,
        log: args.log,
        control_token_file: args.control_token_file,
    }))?;
    Ok(())
}
