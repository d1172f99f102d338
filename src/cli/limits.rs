//! Bounds on numeric options. Beyond them a run would overflow or exhaust memory, so clap
//! refuses them up front as a usage error (exit 2) that names the allowed range.

use clap::builder::RangedU64ValueParser;

pub fn u64_in(min: u64, max: u64) -> RangedU64ValueParser<u64> {
    RangedU64ValueParser::new().range(min..=max)
}

pub fn usize_in(min: u64, max: u64) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(min..=max)
}

/// GPUs in one expert-parallel group.
pub const MAX_EP: u64 = 100_000;
/// Expert slots or experts per MoE layer.
pub const MAX_EXPERTS: u64 = 1_000_000;
/// Tokens of one request's context, input or output (the scenario limit).
pub const MAX_TOKENS: u64 = epsim::serving::scenario::MAX_REQUEST_TOKENS;
/// Requests in one batch, or tokens one rank sends per iteration.
pub const MAX_BATCH: u64 = 10_000_000;
/// MTP draft tokens per step (the scenario limit).
pub const MAX_MTP: u64 = epsim::serving::scenario::MAX_MTP_DRAFTS;
/// Simulated iterations.
pub const MAX_ITERATIONS: u64 = 10_000_000;
/// Iterations of counts an online EPLB window keeps (each holds every layer's counts).
pub const MAX_WINDOW: u64 = 5_000;
