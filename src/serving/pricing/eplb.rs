//! Online EPLB inside the pricer: showing the draws to the placement policy and charging
//! the weights it moves, counted over the real layers the sampled ones stand for.

use super::Pricer;
use crate::moe::policy::{Migration, OnlineStyle, Transport};

impl Pricer<'_> {
    /// Shows the placement policy the routing of the iteration's `tokens` (every
    /// `observe_every` iterations, those since it last looked); returns how long serving
    /// waits for the weights it moves: all of a blocking GPU-to-GPU move, or the part of a
    /// background host copy that the iteration (`iteration_s`) does not hide.
    ///
    /// The policy sees a draw of its own: one multinomial of all the tokens since it last
    /// looked (one per set of routers, with drift) is distributed as the sum of each
    /// iteration's, and costs one draw instead of one per iteration. Its counts are
    /// independent of the priced draws, which are kept and replayed: a plan is judged on
    /// routing it was not fitted to, as serving judges it on iterations still to come (a
    /// plan fitted to the replayed draws would be judged on the very draws it was fitted
    /// to, and overrated). A re-planned layer's kept draws are priced again when replayed.
    pub(super) fn replan(&mut self, tokens: u64, iteration_s: f64) -> Result<f64, String> {
        if !self.policy.observes() {
            return Ok(0.0);
        }
        self.unobserved_tokens += tokens;
        self.unobserved_iterations += 1;
        if self.unobserved_iterations < self.observe_every {
            return Ok(0.0);
        }
        self.unobserved_iterations = 0;
        self.draw_unobserved();
        let seen: Vec<Vec<u64>> = (self.unobserved.iter_mut())
            .map(|layer| std::mem::replace(layer, vec![0; layer.len()]))
            .collect();
        let Some(m) = self
            .policy
            .observe(&seen, &mut self.placement)
            .map_err(|e| e.0)?
        else {
            return Ok(0.0);
        };
        for &layer in &m.layers {
            self.placement_moves[layer] += 1;
        }
        self.find_misses();
        Ok(self.migration_stall_s(&m, iteration_s))
    }

    /// Draws the routing of the tokens routed since the last such draw into
    /// [`Self::unobserved`], from the current routers: done when the policy looks, and
    /// before drift changes the routers, so that it sees each token routed as it was.
    pub(super) fn draw_unobserved(&mut self) {
        let tokens = std::mem::take(&mut self.unobserved_tokens);
        if tokens == 0 {
            return;
        }
        for (sum, router) in self.unobserved.iter_mut().zip(&self.routers) {
            for (x, c) in sum.iter_mut().zip(router.sample(tokens, &mut self.rng)) {
                *x += c;
            }
        }
    }

    /// How long serving waits for a re-plan's weights, counted over the real layers: the
    /// re-planned representative layers stand for their share of them, each real layer
    /// moving what its representative did (`layer_bytes` on the busiest rank).
    fn migration_stall_s(&self, m: &Migration, iteration_s: f64) -> f64 {
        let replanned = m.layers.len().max(1) as f64;
        let most = m.changed_slots_per_rank.iter().copied().max().unwrap_or(0) as f64;
        let layer_bytes = most / replanned * self.expert_bytes;
        let real_per_sampled = self.model.moe_layers() as f64 / self.routers.len().max(1) as f64;
        match m.transport {
            // Every real layer at once; serving waits.
            Transport::NvlinkBlocking if self.nvlink_bps > 0.0 => {
                replanned * real_per_sampled * layer_bytes / self.nvlink_bps
            }
            // Each iteration since the last observation copied its layers from host memory,
            // hidden behind that iteration as far as it lasts.
            Transport::HostBackground if self.host_bps > 0.0 => {
                let copy_s = self.copied_layers_per_iteration * layer_bytes / self.host_bps;
                self.observe_every as f64 * (copy_s - iteration_s).max(0.0)
            }
            _ => 0.0,
        }
    }
}

/// Layer-wise online EPLB over a few representative layers: a real layer is re-planned every
/// `moe_layers / layers_per_iteration` iterations, so each representative layer must be
/// too, from as many iterations of counts. The policy sees the counts of `stride`
/// iterations at once, with the per-iteration decay compounded over them. Periodic
/// re-plans see the counts of as many iterations at once as divide both their period and
/// their window, and count both in those strides.
pub(super) fn observe_stride(
    online: OnlineStyle,
    moe_layers: u64,
    sampled: usize,
) -> (OnlineStyle, u64) {
    match online {
        OnlineStyle::Layerwise {
            layers_per_iteration,
            decay,
        } => {
            let per_iteration = (sampled * layers_per_iteration.max(1)) as u64;
            let stride = (moe_layers / per_iteration).max(1);
            let style = OnlineStyle::Layerwise {
                layers_per_iteration,
                decay: decay.powi(stride as i32),
            };
            (style, stride)
        }
        OnlineStyle::Periodic { every, window } => {
            let (every, window) = (every.max(1), window.max(1));
            let stride = gcd(every, window);
            let style = OnlineStyle::Periodic {
                every: every / stride,
                window: window / stride,
            };
            (style, stride)
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn representative_layers_are_replanned_as_often_as_real_ones() {
        let layerwise = OnlineStyle::Layerwise {
            layers_per_iteration: 2,
            decay: 0.9,
        };
        let (style, stride) = observe_stride(layerwise, 58, 4);
        assert_eq!(
            stride, 7,
            "58 layers, 2 a step: each every 29 steps; 4 layers: every 7 x 4"
        );
        let OnlineStyle::Layerwise { decay, .. } = style else {
            panic!("still layer-wise")
        };
        assert!((decay - 0.9f64.powi(7)).abs() < 1e-12);
        let periodic = |every, window| OnlineStyle::Periodic { every, window };
        assert_eq!(
            observe_stride(periodic(1000, 400), 58, 4),
            (periodic(5, 2), 200),
            "seen 200 iterations at a time: every 5 x 200, from the last 2 x 200"
        );
        assert_eq!(observe_stride(periodic(7, 1), 58, 4), (periodic(7, 1), 1));
    }
}
