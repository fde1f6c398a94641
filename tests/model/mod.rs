//! The model of the world the operator acts on, and the runs of random event sequences over it.

pub mod run;
pub mod world;
