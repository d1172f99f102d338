//! The flow-level network model: routes over the topology graph and max-min fair sharing
//! of link bandwidth.

pub mod maxmin;
pub mod routes;
