//! The serving simulation (issue 6, in progress): so far the workloads that feed it.

pub mod workload;
