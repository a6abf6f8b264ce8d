//! One sync of the node's rules (`sync_proxy_rules`): render, one `iptables-restore`, the jump
//! rules, the UDP conntrack cleanup, the health-check node ports.
//!
//! Invariant: `applied` is the render the kernel holds, or `None` when unknown (startup, or a
//! restore failed). A partial sync is only sent on top of a known render; otherwise the sync is
//! full, and the stale service chains come from what `iptables-save` lists.

use std::sync::Arc;
use std::time::Instant;

use crate::conntrack::{self, Conntrack};
use crate::iptables::{Executor, Iptables, IptablesError, chain_names};
use crate::model::ServicePort;
use crate::rules::{self, Config, NodeInfo, Rendered};
use crate::runner::SyncKind;
use crate::server::{HealthCheckServer, Metrics, health_checks};

pub struct Proxier<E: Executor = Iptables> {
    cfg: Config,
    ipt: E,
    conntrack: Conntrack,
    metrics: Arc<Metrics>,
    health: HealthCheckServer,
    /// The render the kernel holds, if known.
    applied: Option<Rendered>,
    /// The Service ports of the last applied render (for the conntrack diff). Kept across a
    /// failed restore: the restore is one transaction, so the kernel still holds them.
    applied_services: Vec<ServicePort>,
}

impl<E: Executor> Proxier<E> {
    pub fn new(cfg: Config, ipt: E, metrics: Arc<Metrics>) -> Proxier<E> {
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
            // The kernel holds what we last applied: its chains are the ones that can be stale.
            (SyncKind::Full, Some(prev)) => {
                let names = prev.nat.chain_names();
                let stale = rules::stale_chains(names.iter().map(String::as_str), &next);
                (SyncKind::Full, rules::full_sync_text(&next, &stale))
            }
            // At start or after a failed restore: ask the kernel which chains are there (none of
            // ours without KUBE-SERVICES: an empty table needs no save).
            _ if !self.ipt.has_nat_chain(rules::KUBE_SERVICES).await => {
                (SyncKind::Full, rules::full_sync_text(&next, &[]))
            }
            _ => {
                let saved = self.ipt.save("nat").await?;
                let names = chain_names(&saved);
                let stale = rules::stale_chains(names.iter().map(String::as_str), &next);
                (SyncKind::Full, rules::full_sync_text(&next, &stale))
            }
        };
        // A full sync also puts back missing jumps from the built-in chains, in the same
        // restore when they can be listed (one transaction instead of a process per jump).
        let jumps = if kind == SyncKind::Full { Some(rules::jump_rules(&self.cfg)) } else { None };
        let missing = match &jumps {
            Some(j) => self.ipt.missing_jumps(j).await,
            None => None,
        };
        let text = match &missing {
            Some(m) => crate::iptables::with_jumps(&text, m),
            None => text,
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
            if let (Some(jumps), None) = (&jumps, &missing) {
                self.ipt.ensure_jumps(jumps).await?;
            }
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::model::build;
    use crate::model::tests::{Slice, Svc};
    use crate::rules::JumpRule;

    /// Records what would have reached the kernel; `fail_next_restore` makes one restore fail.
    #[derive(Default)]
    struct FakeIptables {
        restores: Mutex<Vec<String>>,
        jump_calls: Mutex<usize>,
        saves: Mutex<usize>,
        /// What `iptables-save -t nat` answers.
        saved_nat: Mutex<String>,
        fail_next_restore: AtomicBool,
    }

    impl Executor for FakeIptables {
        async fn restore(&self, text: &str) -> Result<(), IptablesError> {
            if self.fail_next_restore.swap(false, Ordering::SeqCst) {
                return Err(IptablesError::Failed { program: "iptables-restore".into(), stderr: "injected".into() });
            }
            self.restores.lock().expect("lock").push(text.to_string());
            Ok(())
        }
        async fn save(&self, _table: &str) -> Result<String, IptablesError> {
            *self.saves.lock().expect("lock") += 1;
            Ok(self.saved_nat.lock().expect("lock").clone())
        }
        async fn ensure_jumps(&self, _jumps: &[JumpRule]) -> Result<(), IptablesError> {
            *self.jump_calls.lock().expect("lock") += 1;
            Ok(())
        }
    }

    fn proxier() -> Proxier<FakeIptables> {
        let cfg = Config { cluster_cidr: "10.244.0.0/16".parse().ok(), ..Config::default() };
        Proxier::new(cfg, FakeIptables::default(), Arc::new(Metrics::new(std::time::Duration::from_secs(30))))
    }

    fn node() -> NodeInfo {
        NodeInfo { name: "node-a".into(), addresses: vec![] }
    }

    fn web(ips: &[&str]) -> Vec<ServicePort> {
        let svc = Svc::new("ns1", "web", "10.96.0.10").port("http", "TCP", 80, None);
        let slice =
            ips.iter().fold(Slice::new("ns1", "web-1", "web").port("http", "TCP", 8080), |s, ip| s.ep(ip, "node-a"));
        build(&[svc.0], &[slice.0])
    }

    fn restores(p: &Proxier<FakeIptables>) -> Vec<String> {
        p.ipt.restores.lock().expect("lock").clone()
    }

    #[tokio::test]
    async fn the_first_sync_is_full_deletes_stale_chains_from_iptables_save_and_ensures_jumps() {
        let mut p = proxier();
        *p.ipt.saved_nat.lock().expect("lock") =
            "*nat\n:KUBE-SVC-OLDOLDOLDOLDOLD - [0:0]\n:DOCKER - [0:0]\nCOMMIT\n".into();
        // Asked for a partial sync, but the kernel's state is unknown: it must be full.
        p.sync_proxy_rules(web(&["10.244.0.2"]), &node(), SyncKind::Partial).await.expect("sync");
        let sent = restores(&p);
        assert_eq!(sent.len(), 1);
        assert!(sent[0].contains(":KUBE-SERVICES - [0:0]") && sent[0].contains(":KUBE-FORWARD - [0:0]"), "{}", sent[0]);
        assert!(sent[0].contains("-X KUBE-SVC-OLDOLDOLDOLDOLD"), "stale chain deleted:\n{}", sent[0]);
        assert!(!sent[0].contains("DOCKER"), "other owners' chains are never touched");
        assert_eq!(*p.ipt.jump_calls.lock().expect("lock"), 1);
        assert!(p.knows_kernel_state());
    }

    #[tokio::test]
    async fn a_partial_sync_sends_only_what_changed_and_nothing_when_nothing_did() {
        let mut p = proxier();
        p.sync_proxy_rules(web(&["10.244.0.2"]), &node(), SyncKind::Full).await.expect("sync");
        p.sync_proxy_rules(web(&["10.244.0.2", "10.244.0.3"]), &node(), SyncKind::Partial).await.expect("sync");
        let sent = restores(&p);
        assert_eq!(sent.len(), 2);
        assert!(!sent[1].contains(":KUBE-FORWARD"), "unchanged chains are not resent:\n{}", sent[1]);
        assert!(sent[1].contains("10.244.0.3:8080"), "{}", sent[1]);
        assert_eq!(*p.ipt.jump_calls.lock().expect("lock"), 1, "jumps only on full syncs");
        assert_eq!(*p.ipt.saves.lock().expect("lock"), 1, "iptables-save only on full syncs");
        p.sync_proxy_rules(web(&["10.244.0.2", "10.244.0.3"]), &node(), SyncKind::Partial).await.expect("sync");
        assert_eq!(restores(&p).len(), 2, "no restore when nothing changed");
    }

    #[tokio::test]
    async fn after_a_failed_restore_the_next_sync_is_full() {
        let mut p = proxier();
        p.sync_proxy_rules(web(&["10.244.0.2"]), &node(), SyncKind::Full).await.expect("sync");
        p.ipt.fail_next_restore.store(true, Ordering::SeqCst);
        let err = p.sync_proxy_rules(web(&["10.244.0.3"]), &node(), SyncKind::Partial).await;
        assert!(err.is_err());
        assert!(!p.knows_kernel_state());
        p.sync_proxy_rules(web(&["10.244.0.3"]), &node(), SyncKind::Partial).await.expect("sync");
        let sent = restores(&p);
        assert_eq!(sent.len(), 2);
        assert!(sent[1].contains(":KUBE-FORWARD - [0:0]"), "the retry rewrites everything:\n{}", sent[1]);
        assert_eq!(*p.ipt.jump_calls.lock().expect("lock"), 2);
    }
}
