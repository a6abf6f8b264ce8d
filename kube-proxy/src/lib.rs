//! kube-proxy's library: the pure parts of the iptables proxier.
//!
//! - [`model`]: Services and EndpointSlices reduced to what the proxy needs.
//! - [`rules`]: the `iptables-restore` text for a node, full or only what changed.
//!
//! The runner (watch loop, rate-limited sync, `iptables-restore`, conntrack cleanup) is built on
//! top of these and is the only part that touches the system.

pub mod model;
pub mod rules;
