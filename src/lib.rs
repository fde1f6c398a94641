//! Dovecot backend upgrade operator: a pure step machine driven by thin kube and exec edges.

pub mod api;
pub mod conditions;
pub mod dovecot;
pub mod plan;
pub mod settings;
