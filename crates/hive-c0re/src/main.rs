//! `hive-c0re`: thin entry point; the work is in the library.

use std::io::Write;
use std::path::Path;

use hive_c0re::cli::{Cli, Command, run_client};
use hive_c0re::daemon::serve;
use hive_c0re::paths::Paths;
use hive_c0re::sd_notify::Notifier;
use hive_c0re::serve_config::{DEFAULT_CONFIG, Resolved};

fn main() {
    let cli = Cli::parse_or_exit();
    let code = match cli.command {
        Command::Serve { print_config, .. } => {
            let settings = settings();
            if print_config {
                // A reader that went away (`| head`) had what it wanted.
                let _ = std::io::stdout().write_all(settings.render().as_bytes());
                std::process::exit(0);
            }
            // SAFETY: no other thread runs yet (the async runtime starts below).
            let notify = unsafe { Notifier::take_from_env() };
            init_logging();
            let mut opts = settings.serve_options();
            opts.notify = notify;
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("hive-c0re: could not start the async runtime: {e}");
                    std::process::exit(2);
                }
            };
            let code = match rt.block_on(serve(opts)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("hive-c0re: {e:#}");
                    match e.downcast_ref::<hive_c0re::hive::nodes::NodeNameTaken>() {
                        Some(_) => hive_c0re::hive::nodes::NodeNameTaken::EXIT,
                        None => 2,
                    }
                }
            };
            // Dropping the runtime would wait for every blocking task, even
            // one serve already said it exits without (a file walk, a stuck
            // read): give them a moment, then go.
            rt.shutdown_timeout(std::time::Duration::from_secs(5));
            code
        }
        Command::Doctor { .. } => hive_c0re::doctor::run(&settings()),
        other => run_client(&Paths::resolve(cli.state_dir, cli.run_dir), other),
    };
    std::process::exit(code);
}

/// The settings of serve (and doctor) from flags, environment and config file; exits 2 on a bad one.
fn settings() -> Resolved {
    let argv: Vec<_> = std::env::args_os().collect();
    Cli::settings(&argv, Path::new(DEFAULT_CONFIG)).unwrap_or_else(|e| {
        eprintln!("hive-c0re: {e}");
        std::process::exit(2);
    })
}

fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        // On a failed write (stderr a file on a full disk) it would
        // `eprintln!` about it, which panics the task that logged.
        .log_internal_errors(false)
        .init();
}
