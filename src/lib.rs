//! Dovecot backend upgrade operator: a pure step machine driven by thin kube and exec edges.

pub mod api;
pub mod conditions;
pub mod controller;
pub mod dovecot;
pub mod engine;
pub mod exec;
pub mod http;
pub mod lab;
pub mod metrics;
pub mod plan;
pub mod settings;
pub mod window;
