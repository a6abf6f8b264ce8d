//! One sync of the node's rules (`sync_proxy_rules`): render, one `iptables-restore`, the jump
//! rules, the UDP conntrack cleanup, the health-check node ports.
//!
//! Invariant: `applied` is the render the kernel holds, or `None` when unknown (startup, or a
//! restore failed). A partial sync is only sent on top of a known render; otherwise the sync is
//! full, and the stale service chains come from what `iptables-save` lists.

use std::sync::Arc;
use std::time::Instant;

use crate::conntrack::{self, Conntrack};
use crate::iptables::{Iptables, IptablesError, chain_names};
use crate::model::ServicePort;
use crate::rules::{self, Config, NodeInfo, Rendered};
use crate::runner::SyncKind;
use crate::server::{HealthCheckServer, Metrics, health_checks};

pub struct Proxier {
    cfg: Config,
    ipt: Iptables,
    conntrack: Conntrack,
    metrics: Arc<Metrics>,
    health: HealthCheckServer,
    /// The render the kernel holds, if known.
    applied: Option<Rendered>,
    /// The Service ports of the last applied render (for the conntrack diff). Kept across a
    /// failed restore: the restore is one transaction, so the kernel still holds them.
    applied_services: Vec<ServicePort>,
}

impl Proxier {
    pub fn new(cfg: Config, ipt: Iptables, metrics: Arc<Metrics>) -> Proxier {
        Proxier {
            cfg,
            ipt,
            conntrack: Conntrack::default(),
            metrics,
            health: HealthCheckServer::default(),
            applied: None,
            applied_services: Vec::new(),
        }
    }

    /// Whether the kernel is known to hold the last render (a partial sync is possible).
    pub fn knows_kernel_state(&self) -> bool {
        self.applied.is_some()
    }

    /// Brings the kernel's rules to `services` on `node`. A partial `kind` becomes full when the
    /// kernel's state is unknown.
    pub async fn sync_proxy_rules(
        &mut self,
        services: Vec<ServicePort>,
        node: &NodeInfo,
        kind: SyncKind,
    ) -> Result<(), IptablesError> {
        let start = Instant::now();
        let next = rules::render(&services, node, &self.cfg);
        let (kind, text) = match (kind, &self.applied) {
            (SyncKind::Partial, Some(prev)) => (SyncKind::Partial, rules::render_changed(prev, &next)),
            _ => {
                let saved = self.ipt.save("nat").await?;
                let names = chain_names(&saved);
                let stale = rules::stale_chains(names.iter().map(String::as_str), &next);
                (SyncKind::Full, rules::full_sync_text(&next, &stale))
            }
        };
        if !text.is_empty()
            && let Err(e) = self.ipt.restore(&text).await
        {
            self.applied = None;
            self.metrics.restore_failures.inc();
            return Err(e);
        }
        if kind == SyncKind::Full {
            self.metrics.full_syncs.inc();
            self.ipt.ensure_jumps(&rules::jump_rules(&self.cfg)).await?;
        } else {
            self.metrics.partial_syncs.inc();
        }
        self.applied = Some(next);
        let targets = conntrack::targets(&self.applied_services, &services);
        self.conntrack.clear(&targets).await;
        self.health.update(health_checks(&services, &node.name)).await;
        let elapsed = start.elapsed();
        self.metrics.sync_duration.observe(elapsed.as_secs_f64());
        self.metrics.synced();
        if text.is_empty() && targets.is_empty() {
            // Changes that did not touch this node's rules (a Service's status, say) are routine.
            tracing::debug!(kind = ?kind, elapsed_ms = elapsed.as_millis() as u64, "Synced proxy rules: nothing changed");
        } else {
            tracing::info!(
                service_ports = services.len(),
                kind = ?kind,
                bytes = text.len(),
                conntrack = targets.len(),
                elapsed_ms = elapsed.as_millis() as u64,
                "Synced proxy rules"
            );
        }
        self.applied_services = services;
        Ok(())
    }

    /// Closes the health-check node ports (on shutdown; the rules stay, as upstream).
    pub fn stop(&mut self) {
        self.health.stop();
    }
}
