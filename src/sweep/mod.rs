//! Sweeps over scenario fields: planning the points (`plan`), running them in parallel with
//! durable per-point results, shards and merging (`run`).

pub mod capacity;
pub mod compare;
pub mod folder;
pub mod frontier;
pub mod plan;
pub mod plot;
pub mod pool;
pub mod replicates;
pub mod run;
