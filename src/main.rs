//! `adsnap`: the one user-facing binary. Each subcommand parses its flags and calls a library.

mod abtest_cli;
mod admin_cli;
mod cli;
mod distribute_cli;
mod events_cli;
mod profiles_cli;
mod serve_cli;

/// jemalloc: the reference fleet measured about 30% more speed with it than with the system
/// allocator on this kind of workload (many short-lived request buffers across threads).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts: its memory on transparent huge pages (`thp:always`
/// asks for them with `MADV_HUGEPAGE`, which kernels in `madvise` mode need). The profile store's
/// memory layer spreads a million users over hundreds of MiB, and each look-up's misses then
/// also miss the TLB on 4 KiB pages. The `_RJEM_MALLOC_CONF` variable, read after this,
/// overrides it (`_RJEM_MALLOC_CONF=thp:default` leaves pages to the kernel's setting).
///
/// And thread caches tidied after every 4 MiB a thread allocates instead of every 64 KiB: hyper
/// allocates an 8 KiB read buffer per request, so by default the request thread tidied its cache
/// every few requests, about 600 of an ad request's 25,700 instructions (callgrind).
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: MallocConf = MallocConf(c"thp:always,tcache_gc_incr_bytes:4194304".as_ptr());

/// A C string pointer jemalloc reads once at start; it points at a static literal.
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);
// SAFETY: the pointer is to an immutable 'static string; nothing ever writes through it.
unsafe impl Sync for MallocConf {}

use clap::Parser;

/// The log filter without `ADSNAP_LOG`: adsnap at info; the profile store's storage engine
/// (fjall, lsm_tree) only when it warns, as its info lines are about its own housekeeping.
const DEFAULT_LOG_FILTER: &str = "info,fjall=warn,lsm_tree=warn";

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ADSNAP_LOG")
                .unwrap_or_else(|_| DEFAULT_LOG_FILTER.into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log sent to a file or a journal gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = cli::Cli::parse();
    match cli.run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", chain_text(&err));
            std::process::ExitCode::from(1)
        }
    }
}

/// An error and its causes, joined by ": ", as `{:#}` prints them, leaving out a cause that the
/// message before it already quotes: many of the libraries' errors print their cause too, and
/// "cannot listen on 127.0.0.1:8080: Address already in use" then came out with the cause twice.
fn chain_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain().map(ToString::to_string) {
        if text.is_empty() {
            text = cause;
        } else if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn causes_already_quoted_are_not_repeated() {
        let io = || std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let quoted = anyhow::Error::new(adsnap_serve::ServeError::Listen {
            addr: ([127, 0, 0, 1], 8080).into(),
            source: io(),
        });
        assert_eq!(super::chain_text(&quoted), "cannot listen on 127.0.0.1:8080: Address already in use");
        let context = anyhow::Error::new(io()).context("starting the server");
        assert_eq!(super::chain_text(&context), "starting the server: Address already in use");
    }
}
