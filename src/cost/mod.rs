//! Pure cost functions: how long ops take on the hardware. Compute (roofline GEMMs,
//! GroupGEMM, attention) and, with the communication issue, the network.

pub mod accuracy;
pub mod collective;
pub mod compute;
pub mod kernels;
pub mod network;
pub mod profile;
pub mod step;
