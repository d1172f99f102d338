//! Two-batch overlap (TBO): the iteration's batch split into two micro-batches A and B, so
//! that one's all-to-all runs under the other's compute. Per MoE layer the two interleave
//! in four stages, each a compute kernel of one micro-batch beside a communication kernel
//! of the other (SGLang's two-batch overlap, DeepSeek's decode):
//!
//! ```text
//!   compute:  attn A | attn B | experts A | experts B | attn A (next layer) ...
//!   network:  comb B | disp A | disp B    | comb A    | comb B ...
//! ```
//!
//! A stage lasts as long as its longer side, so a mismatch between compute and
//! communication is paid stage by stage, not hidden in one max(compute, comm) over the
//! iteration. Three costs that perfect overlap ignores:
//! - each micro-batch is priced on its own (done by the caller): at small batches the
//!   kernels are latency-bound and two halves cost nearly twice one whole;
//! - communication kernels that move data with SMs take them from the compute beside them
//!   (DeepEP's normal kernels: 20 of an H800's 132), which then runs on the rest;
//! - the pipeline fills and drains: the first attention and the last combine have nothing
//!   beside them.
//!
//! The dense layers, the LM head and the MTP drafts run once per micro-batch, serially.

use crate::topology::A2aAlgorithm;

/// One micro-batch's iteration, seconds, all MoE layers together.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MicroBatch {
    /// Compute inside the MoE layers outside the routed experts: attention block, router,
    /// shared expert, TP all-reduces.
    pub attention_s: f64,
    /// Routed experts.
    pub experts_s: f64,
    pub dispatch_s: f64,
    pub combine_s: f64,
    /// What cannot overlap: dense layers, LM head, MTP drafts (with their all-to-alls).
    pub serial_s: f64,
}

impl MicroBatch {
    /// Its time with nothing beside it.
    pub fn alone_s(&self) -> f64 {
        self.attention_s + self.experts_s + self.dispatch_s + self.combine_s + self.serial_s
    }
}

/// SMs a communication kernel holds while it runs, taken from compute beside it.
/// - DeepEP normal (hierarchical) kernels: 20 SMs saturate InfiniBand and NVLink on H800
///   (DeepSeek-V3 tech report; DeepEP README; reference section 6 gives 20-24).
/// - DeepEP low-latency kernels: none while data is in flight (hook-based receive;
///   DeepEP README).
/// - One-sided NVLink kernels (TensorRT-LLM's MNNVL all-to-all) copy with SMs as the
///   normal kernels do. Not measured: assumed 20 as DeepEP's, until a measurement exists.
pub fn communication_sms(algorithm: A2aAlgorithm) -> u32 {
    match algorithm {
        A2aAlgorithm::Hierarchical | A2aAlgorithm::Direct => 20,
        A2aAlgorithm::LowLatency => 0,
    }
}

/// The iteration's seconds with micro-batches `a` and `b` interleaved over `layers` MoE
/// layers, communication holding `comm_sm_share` of the SMs while it runs.
pub fn overlapped_seconds(a: &MicroBatch, b: &MicroBatch, layers: f64, comm_sm_share: f64) -> f64 {
    if layers <= 0.0 {
        return a.alone_s() + b.alone_s();
    }
    let per = |x: f64| x / layers;
    let stage = |compute_s: f64, comm_s: f64| stage_seconds(compute_s, comm_s, comm_sm_share);
    let (attn_a, attn_b) = (per(a.attention_s), per(b.attention_s));
    let (exp_a, exp_b) = (per(a.experts_s), per(b.experts_s));
    let (disp_a, disp_b) = (per(a.dispatch_s), per(b.dispatch_s));
    let (comb_a, comb_b) = (per(a.combine_s), per(b.combine_s));
    // Fill (A's first attention alone), the layers, drain (B's last combine alone).
    let first_stage = attn_a + (layers - 1.0) * stage(attn_a, comb_b);
    let other_stages =
        layers * (stage(attn_b, disp_a) + stage(exp_a, disp_b) + stage(exp_b, comb_a));
    first_stage + other_stages + comb_b + a.serial_s + b.serial_s
}

/// A stage: `compute_s` of work (on the whole GPU) beside `comm_s` of communication that
/// holds `sm_share` of the SMs while it runs. Compute goes at 1 - `sm_share` until the
/// communication ends, then at full speed.
fn stage_seconds(compute_s: f64, comm_s: f64, sm_share: f64) -> f64 {
    comm_s.max(compute_s + comm_s * sm_share)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(attention_s: f64, experts_s: f64, comm_s: f64) -> MicroBatch {
        MicroBatch {
            attention_s,
            experts_s,
            dispatch_s: comm_s / 2.0,
            combine_s: comm_s / 2.0,
            serial_s: 0.0,
        }
    }

    #[test]
    fn without_communication_the_halves_run_one_after_the_other() {
        let (a, b) = (batch(3.0, 2.0, 0.0), batch(2.0, 1.0, 0.0));
        let t = overlapped_seconds(&a, &b, 58.0, 0.15);
        assert!((t - 8.0).abs() < 1e-12, "{t}");
    }

    #[test]
    fn overlap_costs_more_than_perfect_and_less_than_serial() {
        let (a, b) = (batch(1.0, 1.0, 1.5), batch(1.0, 1.0, 1.5));
        let serial = a.alone_s() + b.alone_s();
        let perfect = (4.0f64).max(3.0);
        for share in [0.0, 0.15] {
            let t = overlapped_seconds(&a, &b, 58.0, share);
            assert!(t > perfect && t < serial, "{share}: {t}");
        }
        // SMs taken by the communication slow the compute beside it.
        assert!(overlapped_seconds(&a, &b, 58.0, 0.15) > overlapped_seconds(&a, &b, 58.0, 0.0));
    }

    #[test]
    fn a_stage_lasts_its_longer_side_with_compute_slowed_while_communication_runs() {
        assert_eq!(stage_seconds(1.0, 2.0, 0.25), 2.0);
        assert_eq!(stage_seconds(2.0, 1.0, 0.25), 2.25);
        assert_eq!(stage_seconds(2.0, 0.0, 0.25), 2.0);
    }

    #[test]
    fn one_layer_pays_the_fill_and_drain_whole() {
        let (a, b) = (batch(1.0, 1.0, 2.0), batch(1.0, 1.0, 2.0));
        // attn A | max(attn B, disp A) | max(exp A, disp B) | max(exp B, comb A) | comb B
        assert_eq!(
            overlapped_seconds(&a, &b, 1.0, 0.0),
            1.0 + 1.0 + 1.0 + 1.0 + 1.0
        );
    }
}
