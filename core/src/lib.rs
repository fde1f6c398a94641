//! The pure core of the Dovecot backend upgrade operator: no I/O, no clock, no kube client.
//!
//! The compiler keeps it so (no tokio or kube client in this crate's dependencies) and
//! `clippy.toml` forbids std's clock, environment, files, processes and sockets here.

pub mod api;
pub mod control;
pub use machine::conditions;
pub mod dovecot;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod imap;
pub mod machine;
pub mod maintenance;
pub mod probe;
pub mod reason;
pub mod reset_guard;
pub mod settings;
pub mod text;
pub mod time;
pub mod window;
