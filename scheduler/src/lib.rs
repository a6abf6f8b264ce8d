//! The scheduler: binds pending pods to the nodes that fit them best. See ARCHITECTURE.md.

pub mod app;
pub mod framework;
pub mod interpod;
pub mod plugins;
pub mod queue;
