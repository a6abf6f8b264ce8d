//! The controller-manager's library: `app` runs the process; each controller is a module with
//! pure planning functions and one `sync(key)` that does the writes.

pub mod app;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod events;
pub mod expectations;
pub mod garbagecollector;
pub mod hash;
pub mod history;
pub mod informer;
pub mod job;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod ownership;
pub mod podautoscaler;
pub mod podgc;
pub mod pods;
pub mod replicaset;
pub mod resources;
pub mod selector;
pub mod serviceaccount;
pub mod servicelb;
pub mod statefulset;
pub mod status;
pub mod tokens;
pub mod volume;
pub mod workqueue;
