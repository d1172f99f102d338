//! The subcommands, one module each; `main.rs` only parses and dispatches.

pub mod a2a;
pub mod accuracy;
pub mod compare;
pub mod eplb;
pub mod frontier;
pub mod imbalance;
pub mod iteration;
pub mod limits;
pub mod lookup;
pub mod memory;
pub mod output;
pub mod plan;
pub mod plot;
pub mod run;
pub mod step;
pub mod topo;
