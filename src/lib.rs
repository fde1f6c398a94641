//! Dovecot backend upgrade operator: the pure core (`dbu_core`) driven by thin kube and exec edges.
//!
//! Layers, data flowing one way: `controller` (kube glue) -> `engine` (acts once per reconcile)
//! -> `machine` (pure: decides, judges, records). The lab and its test doubles live in the
//! `dbu-lab` crate under tests/lab; the operator binary ships none of them.

pub use dbu_core::{
    api, conditions, control, dovecot, machine, reason, settings, text, time, window,
};

pub mod controller;
pub mod engine;
pub mod exec;
pub mod http;
pub mod metrics;
pub mod probe;
