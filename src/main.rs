//! `adsnap`: the one user-facing binary. Each subcommand parses its flags and calls a library.

mod cli;
mod distribute_cli;
mod serve_cli;

/// jemalloc: the reference fleet measured about 30% more speed with it than with the system
/// allocator on this kind of workload (many short-lived request buffers across threads).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::Parser;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ADSNAP_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = cli::Cli::parse();
    match cli.run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(1)
        }
    }
}
