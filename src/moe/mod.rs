//! Expert routing and placement: which experts a batch's tokens go to, which GPU holds each
//! expert, and how placement is re-planned (EPLB).

pub mod eplb;
pub mod imbalance;
pub mod placement;
pub mod policy;
pub mod popularity;
pub mod replay;
pub mod routing;
pub mod traffic;
