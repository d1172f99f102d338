//! Placement policies behind one trait: where experts live when serving starts, and how
//! (and whether) that changes while serving.

use super::placement::{Placement, PlacementError};
use serde::Serialize;
use std::collections::VecDeque;

/// Where experts live: placement fixed, planned once, or re-planned while serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum EplbMode {
    /// Contiguous placement: expert e on rank e / (experts / EP).
    None,
    /// DeepSeek's EPLB, planned once from the warm-up iterations' counts.
    Static,
    /// DeepSeek's EPLB, re-planned while serving.
    Online,
}

/// How online EPLB gathers statistics, re-plans and moves weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "style", deny_unknown_fields)]
pub enum OnlineStyle {
    /// SGLang / vLLM: every `every` iterations, all layers from the counts of the last
    /// `window` iterations; weights move GPU to GPU over NVLink and serving waits.
    Periodic { every: u64, window: u64 },
    /// TensorRT-LLM: `layers_per_iteration` layers re-planned each iteration, round robin,
    /// from counts decayed by `decay` per iteration (reset when the layer is re-planned);
    /// weights are copied from host memory in the background.
    Layerwise {
        layers_per_iteration: usize,
        decay: f64,
    },
}

/// How re-planned weights reach their GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// GPU to GPU over NVLink; serving waits (SGLang, vLLM).
    NvlinkBlocking,
    /// From host memory over NVLink-C2C, overlapped with serving (TensorRT-LLM).
    HostBackground,
}

/// The weights one re-plan moves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Migration {
    /// The sampled layers re-planned, in order.
    pub layers: Vec<usize>,
    /// Slots that now hold a different expert, per rank (each is one expert's weights in).
    pub changed_slots_per_rank: Vec<usize>,
    pub transport: Transport,
}

pub trait PlacementPolicy {
    /// The placement serving starts with; `warmup` holds the warm-up's summed counts
    /// `[layer][expert]`.
    fn initial(&mut self, warmup: &[Vec<f64>]) -> Result<Placement, PlacementError>;

    /// Sees one iteration's counts `[layer][expert]`; may re-plan layers of `placement`.
    /// Policies that never re-plan keep this default.
    fn observe(
        &mut self,
        _counts: &[Vec<u64>],
        _placement: &mut Placement,
    ) -> Result<Option<Migration>, PlacementError> {
        Ok(None)
    }

    /// Whether the policy reads what [`Self::observe`] shows it: serving draws routing
    /// for it to see, and keeps counts to price again when it moves experts, only for the
    /// policies that do.
    fn observes(&self) -> bool {
        false
    }
}

/// Shape shared by the policies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    pub layers: usize,
    pub experts: usize,
    pub slots: usize,
    pub groups: usize,
    pub ranks: usize,
}

/// No EPLB: expert e on rank e / (experts / ranks), one slot each, forever.
pub struct NoEplb(pub Shape);

impl PlacementPolicy for NoEplb {
    fn initial(&mut self, _: &[Vec<f64>]) -> Result<Placement, PlacementError> {
        let s = self.0;
        if s.slots != s.experts {
            return Err(PlacementError(format!(
                "{} slots for {} experts: redundant slots need EPLB (static or online)",
                s.slots, s.experts
            )));
        }
        Placement::contiguous(s.layers, s.experts, s.ranks)
    }
}

/// DeepSeek's EPLB planned once, from a given load profile or else the warm-up's counts.
pub struct StaticEplb {
    pub shape: Shape,
    pub profile: Option<Vec<Vec<f64>>>,
}

impl PlacementPolicy for StaticEplb {
    fn initial(&mut self, warmup: &[Vec<f64>]) -> Result<Placement, PlacementError> {
        let s = self.shape;
        let profile = self.profile.as_deref().unwrap_or(warmup);
        if profile.len() != s.layers || profile.iter().any(|l| l.len() != s.experts) {
            return Err(PlacementError(format!(
                "the load profile must have {} layers of {} experts",
                s.layers, s.experts
            )));
        }
        Placement::eplb(profile, s.slots, s.groups, s.ranks)
    }
}

/// DeepSeek's EPLB re-planned while serving.
pub struct OnlineEplb {
    shape: Shape,
    style: OnlineStyle,
    /// Per layer: the load the next re-plan uses (decayed counts, or the window's sum).
    load: Vec<Vec<f64>>,
    window: VecDeque<Vec<Vec<u64>>>,
    iteration: u64,
    next_layer: usize,
}

impl OnlineEplb {
    pub fn new(shape: Shape, style: OnlineStyle) -> Self {
        OnlineEplb {
            shape,
            style,
            load: vec![vec![0.0; shape.experts]; shape.layers],
            window: VecDeque::new(),
            iteration: 0,
            next_layer: 0,
        }
    }

    /// Layers to re-plan after this iteration, with `self.load` ready for them.
    fn due(&mut self, counts: &[Vec<u64>]) -> Vec<usize> {
        self.iteration += 1;
        match self.style {
            OnlineStyle::Periodic { every, window } => {
                self.window.push_back(counts.to_vec());
                while self.window.len() as u64 > window.max(1) {
                    self.window.pop_front();
                }
                if !self.iteration.is_multiple_of(every.max(1)) {
                    return Vec::new();
                }
                for (layer, load) in self.load.iter_mut().enumerate() {
                    load.iter_mut().for_each(|x| *x = 0.0);
                    for past in &self.window {
                        add_counts(load, &past[layer], 1.0);
                    }
                }
                (0..self.shape.layers).collect()
            }
            OnlineStyle::Layerwise {
                layers_per_iteration,
                decay,
            } => {
                for (load, c) in self.load.iter_mut().zip(counts) {
                    add_counts(load, c, decay);
                }
                let layers = self.shape.layers.max(1);
                let due = (0..layers_per_iteration.min(layers))
                    .map(|i| (self.next_layer + i) % layers)
                    .collect();
                self.next_layer = (self.next_layer + layers_per_iteration) % layers;
                due
            }
        }
    }
}

impl PlacementPolicy for OnlineEplb {
    fn observes(&self) -> bool {
        true
    }

    fn initial(&mut self, warmup: &[Vec<f64>]) -> Result<Placement, PlacementError> {
        StaticEplb {
            shape: self.shape,
            profile: None,
        }
        .initial(warmup)
    }

    fn observe(
        &mut self,
        counts: &[Vec<u64>],
        placement: &mut Placement,
    ) -> Result<Option<Migration>, PlacementError> {
        let due = self.due(counts);
        if due.is_empty() {
            return Ok(None);
        }
        let s = self.shape;
        let mut changed_slots_per_rank = vec![0; s.ranks];
        for &layer in &due {
            let plan = Placement::eplb(
                std::slice::from_ref(&self.load[layer]),
                s.slots,
                s.groups,
                s.ranks,
            )?;
            let (aligned, changed) = placement.align_layer(layer, plan.phy2log(0).to_vec());
            placement.set_layer(layer, aligned);
            for (total, c) in changed_slots_per_rank.iter_mut().zip(changed) {
                *total += c;
            }
            if matches!(self.style, OnlineStyle::Layerwise { .. }) {
                // TensorRT-LLM resets a layer's statistics once it is re-planned.
                self.load[layer].iter_mut().for_each(|x| *x = 0.0);
            }
        }
        Ok(Some(Migration {
            layers: due,
            changed_slots_per_rank,
            transport: match self.style {
                OnlineStyle::Periodic { .. } => Transport::NvlinkBlocking,
                OnlineStyle::Layerwise { .. } => Transport::HostBackground,
            },
        }))
    }
}

/// The policy for an EPLB mode.
pub fn for_mode(
    mode: EplbMode,
    shape: Shape,
    online: OnlineStyle,
    profile: Option<Vec<Vec<f64>>>,
) -> Box<dyn PlacementPolicy> {
    match mode {
        EplbMode::None => Box::new(NoEplb(shape)),
        EplbMode::Static => Box::new(StaticEplb { shape, profile }),
        EplbMode::Online => Box::new(OnlineEplb::new(shape, online)),
    }
}

/// `sum = sum x scale + counts`, element by element.
pub fn add_counts(sum: &mut [f64], counts: &[u64], scale: f64) {
    for (s, &c) in sum.iter_mut().zip(counts) {
        *s = *s * scale + c as f64;
    }
}
