//! The scheduler: binds pending pods to the nodes that fit them best. See ARCHITECTURE.md.

pub mod app;
pub mod cache;
pub mod config;
pub mod cycle;
pub mod framework;
pub mod interpod;
pub mod plugins;
pub mod preempt;
pub mod queue;
pub mod spread;
#[cfg(test)]
mod testing;
