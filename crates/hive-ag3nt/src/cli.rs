//! The command line shared by `hive-ag3nt` and `hive-m1nd`: exactly `serve` and `mcp`.

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// The in-container harness of a hyperhive agent.
#[derive(Debug, Parser)]
#[command(version, disable_help_subcommand = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the turn loop: wake on inbox messages, run one claude turn each time.
    Serve {
        /// The agent's socket [env: HIVE_AGENT_SOCK; hive-c0re sets it].
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Serve the hive's MCP tools on stdio (claude starts this).
    Mcp {
        /// The agent's socket [env: HIVE_AGENT_SOCK; hive-c0re sets it].
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
}

/// Parses the command line and runs it; `manager` turns on the manager's tools.
pub fn main(bin_name: &'static str, manager: bool) -> ! {
    let about = if manager {
        "The manager's harness in a hyperhive: the agent turn loop, with tools to propose agents and config changes"
    } else {
        "The in-container harness of a hyperhive agent"
    };
    let matches = Cli::command()
        .name(bin_name)
        .bin_name(bin_name)
        .about(about)
        .get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // stdout is the MCP channel in `mcp`: logs go to stderr everywhere.
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        // On a failed write it would `eprintln!` about it, which panics.
        .log_internal_errors(false)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say!("{bin_name}: could not start the async runtime: {e}");
            std::process::exit(2);
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Serve { socket } => {
                let socket = crate::client::socket_path(socket).map_err(anyhow::Error::msg)?;
                crate::turn::serve(crate::harness::Harness::from_env(socket, manager)).await
            }
            Command::Mcp { socket } => {
                let socket = crate::client::socket_path(socket).map_err(anyhow::Error::msg)?;
                crate::mcp::run(socket, manager).await
            }
        }
    });
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            say!("{bin_name}: {e:#}");
            std::process::exit(1);
        }
    }
}
