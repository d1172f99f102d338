//! MoE model configurations (`models/*.yaml`), their parameters per component, number
//! formats, and the memory plan of a deployment.

pub mod acceptance;
mod config;
mod params;
pub mod precision;

pub use acceptance::{Acceptance, AcceptanceFile};
pub use config::{
    Attention, ModelConfig, Moe, NativePrecision, Scoring, SlidingWindow, load_model,
};
pub use params::{ComponentParams, ModelParams};
pub use precision::{Precision, Usage};
pub mod memory;
