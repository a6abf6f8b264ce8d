//! The kubelet: registers its Node, runs the pods bound to it through CRI, and reports their
//! status. See ARCHITECTURE.md for the map.

pub mod app;
pub mod cri;
pub mod events;
pub mod logs;
pub mod node;
pub mod node_logs;
pub mod pod;
pub mod runtime;
pub mod server;
pub mod splice;
pub mod stats;
pub mod streaming;
