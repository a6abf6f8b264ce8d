//! Container runtimes behind the CRI seam: Docker (through `bollard`; the only place that imports
//! it) and an in-memory fake for tests and simulated nodes.

pub mod docker;
pub mod fake;

use std::collections::HashMap;

use proto::cri;

/// Nanoseconds since the epoch, as CRI carries times.
pub fn now_nanos() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

/// Whether `labels` carries every pair of `selector`.
pub fn matches(labels: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Whether a sandbox passes a ListPodSandbox filter.
pub fn sandbox_matches(s: &cri::PodSandbox, filter: &Option<cri::PodSandboxFilter>) -> bool {
    let Some(f) = filter else { return true };
    (f.id.is_empty() || s.id.starts_with(&f.id))
        && f.state.as_ref().is_none_or(|st| st.state == s.state)
        && matches(&s.labels, &f.label_selector)
}

/// Whether a container passes a ListContainers filter.
pub fn container_matches(c: &cri::Container, filter: &Option<cri::ContainerFilter>) -> bool {
    let Some(f) = filter else { return true };
    (f.id.is_empty() || c.id.starts_with(&f.id))
        && (f.pod_sandbox_id.is_empty() || c.pod_sandbox_id.starts_with(&f.pod_sandbox_id))
        && f.state.as_ref().is_none_or(|st| st.state == c.state)
        && matches(&c.labels, &f.label_selector)
}

/// The text of a resolv.conf for `dns` (empty when the sandbox keeps the runtime's default).
pub fn resolv_conf(dns: &cri::DnsConfig) -> String {
    let mut out = String::new();
    for s in &dns.servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    out
}
