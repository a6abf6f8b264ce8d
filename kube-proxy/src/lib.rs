//! kube-proxy's library: the iptables proxier.
//!
//! Pure parts, tested by unit tests:
//! - [`model`]: Services and EndpointSlices reduced to what the proxy needs.
//! - [`rules`]: the `iptables-restore` text for a node, full or only what changed.
//! - [`runner`]: when to sync (the bounded-frequency runner).
//! - [`conntrack`]: which UDP conntrack entries a change makes stale.
//! - [`routes`] (planning half): the host-gw routes to other nodes' pod CIDRs.
//!
//! The parts that touch the system: [`iptables`] (the only caller of the iptables tools),
//! [`proxier`] (one sync), [`server`] (healthz, metrics, health-check node ports) and [`app`]
//! (flags, watches, the sync loop).

pub mod app;
pub mod cluster_dns;
pub mod conntrack;
pub mod dns;
pub mod iptables;
pub mod model;
pub mod proxier;
pub mod routes;
pub mod rules;
pub mod runner;
pub mod server;
