//! epsim: a discrete-event simulator of rack-scale Mixture-of-Experts LLM inference.
//!
//! Layers, each using only those listed before it: [`engine`] (time, events, random
//! streams), [`input`] (YAML with located, collected diagnostics), [`hardware`] (GPU specs),
//! [`topology`] (the graph of GPUs, switches, NICs, CPUs and links), [`model`] (model
//! configs, memory plan), [`cost`] (compute and network cost), [`moe`] (routing, EPLB),
//! [`metrics`], [`serving`] (the serving simulation), [`sweep`] (sweeps over scenarios),
//! [`files`] (any input file, checked).

pub mod cost;
pub mod engine;
pub mod files;
pub mod hardware;
pub mod input;
pub mod metrics;
pub mod model;
pub mod moe;
pub mod serving;
pub mod sweep;
pub mod topology;

#[cfg(test)]
mod testing;
