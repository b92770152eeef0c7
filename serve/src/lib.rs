//! The adsnap ad server: SDK ad requests answered from the mmap'd snapshot over HTTP (hyper on
//! tokio), with signed tracking URLs, health and Prometheus metrics, and hot snapshot swaps.

mod admin;
pub mod answer;
pub mod body;
pub mod config;
pub mod decision;
mod dedup;
pub mod emit;
pub mod error;
mod handlers;
pub mod json;
pub mod json_reader;
pub mod metrics;
pub mod native;
pub mod native_reader;
pub mod openrtb;
pub mod privacy;
mod quiet;
pub mod render;
pub mod request;
pub mod served;
pub mod server;
pub mod slots;
pub mod tcf;
pub mod token;

/// VAST markup, as the snapshot's own module reads it (the builder checks it with the same).
pub use adsnap_snapshot::vast;
pub use config::ServeConfig;
pub use error::{RequestError, ServeError};
pub use server::{bind, bind_admin, serve, serve_admin, State};
pub use slots::Target;
