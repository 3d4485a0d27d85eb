//! `hive-c0re`: thin entry point; the work is in the library.

use std::time::Duration;

use hive_c0re::cli::{Cli, Command, run_client};
use hive_c0re::daemon::{ServeOptions, serve};
use hive_c0re::paths::Paths;
use hive_c0re::store::Limits;

fn main() {
    let cli = Cli::parse_or_exit();
    let paths = Paths::resolve(cli.state_dir, cli.run_dir);
    let code = match cli.command {
        Command::Serve {
            runtime,
            dashboard,
            no_dashboard,
            no_manager,
            inbox_cap,
            events_keep,
            delivered_keep,
            history_days,
            vacuum_secs,
        } => {
            init_logging();
            let opts = ServeOptions {
                paths,
                runtime,
                dashboard: (!no_dashboard).then_some(dashboard),
                no_manager,
                limits: Limits {
                    inbox_cap,
                    events_keep,
                    delivered_keep,
                    max_age_ms: (history_days as i64) * 24 * 3600 * 1000,
                },
                vacuum_every: Duration::from_secs(vacuum_secs.max(1)),
            };
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("hive-c0re: could not start the async runtime: {e}");
                    std::process::exit(2);
                }
            };
            match rt.block_on(serve(opts)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("hive-c0re: {e:#}");
                    2
                }
            }
        }
        other => run_client(&paths, other),
    };
    std::process::exit(code);
}

fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
