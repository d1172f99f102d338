//! The serving simulation: requests arrive, are scheduled onto instances and DP ranks,
//! prefilled and decoded in continuously batched iterations priced by the cost models, and
//! measured as users measure them.

pub mod kv_network;
pub mod metrics;
pub mod output;
pub mod overlap;
pub mod policy;
pub mod pricing;
pub mod scenario;
pub mod sim;
pub mod steady;
pub mod workload;
