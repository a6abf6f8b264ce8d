//! Leader election on a `coordination.k8s.io/v1` Lease, with the behaviour of client-go's
//! `leaderelection` and upstream's defaults (lease 15 s, renew deadline 10 s, retry 2 s), for the
//! scheduler and the controller-manager.
//!
//! Candidates contend for one Lease `<namespace>/<name>` (`kube-system/kube-scheduler` for the
//! scheduler). The holder writes `renewTime` every retry period; the others take the Lease only
//! when its holder is empty (released) or its record has not changed for `leaseDurationSeconds`
//! by their own clock (see [`election`]), and every write is guarded by resourceVersion, so at
//! most one candidate wins (see [`elector`]). A leader that cannot renew within the renew
//! deadline, which is shorter than the lease, stops leading before anyone else may start.
//!
//! Typical use (the process exits when leadership is lost, as upstream's components do):
//!
//! ```no_run
//! # async fn f(client: kube::Client, work: impl std::future::Future<Output = ()>) -> Result<(), Box<dyn std::error::Error>> {
//! let config = leader::Config::new("kube-system", "kube-scheduler", leader::default_identity());
//! let mut elector = leader::LeaderElector::new(client, config)?;
//! elector.acquire().await;
//! tokio::select! {
//!     () = work => {}
//!     lost = elector.hold() => return Err(lost.into()),
//! }
//! # Ok(()) }
//! ```
//!
//! Not built: the coordinated leader election of newer releases (`strategy`, `preferredHolder`,
//! LeaseCandidate objects), other lock kinds, and the leader election metrics.

pub mod config;
pub mod election;
pub mod elector;

pub use config::{Config, ConfigError, default_identity, parse_duration};
pub use election::{Decision, Election, LeaderElectionRecord};
pub use elector::{Error, LeaderElector, LostLeadership};
