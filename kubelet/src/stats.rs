//! Resource usage of the node, its pods and their containers: `/stats/summary` (the Summary API
//! that metrics consumers read), `/metrics/resource` (the same in Prometheus text), and the
//! kubelet's own `/metrics`. Container numbers come from CRI ListContainerStats; CPU rates
//! (nanocores) are the change between two samples.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;

use proto::cri;
use serde_json::{Value, json};

use crate::cri::Cri;
use crate::pod::spec::{LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID};

/// A CPU sample: (time, cumulative nanoseconds).
type Sample = (i64, u64);

pub struct Stats {
    cri: Cri,
    node: String,
    started: jiff::Timestamp,
    last: Mutex<HashMap<String, Sample>>,
}

#[derive(Clone, Debug, Default)]
pub struct Usage {
    pub time: i64,
    pub cpu_total_ns: u64,
    pub cpu_nanocores: Option<u64>,
    pub memory_working_set: u64,
    pub memory_usage: u64,
    pub memory_rss: Option<u64>,
}

#[derive(Clone, Debug, Default)]
pub struct ContainerUsage {
    pub name: String,
    pub started_at: i64,
    pub usage: Usage,
}

#[derive(Clone, Debug, Default)]
pub struct PodUsage {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub containers: Vec<ContainerUsage>,
}

fn clock_ticks_ns() -> u64 {
    // USER_HZ is 100 on Linux.
    10_000_000
}

/// The node's cumulative CPU time (all CPUs, ns) and memory (total, available) from /proc.
fn node_sample() -> (u64, u64, u64) {
    let cpu = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let line = s.lines().next()?.to_string();
            let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
            // user nice system idle iowait irq softirq steal
            let busy = f.first()?
                + f.get(1)?
                + f.get(2)?
                + f.get(5).unwrap_or(&0)
                + f.get(6).unwrap_or(&0)
                + f.get(7).unwrap_or(&0);
            Some(busy * clock_ticks_ns())
        })
        .unwrap_or(0);
    let mem = |field: &str| {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| {
                t.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .map(|kib| kib * 1024)
            .unwrap_or(0)
    };
    (cpu, mem("MemTotal:"), mem("MemAvailable:"))
}

impl Stats {
    pub fn new(cri: Cri, node: &str) -> Self {
        Stats { cri, node: node.to_string(), started: jiff::Timestamp::now(), last: Mutex::new(HashMap::new()) }
    }

    fn rate(&self, key: &str, now: i64, total: u64) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let prev = last.insert(key.to_string(), (now, total));
        let (t0, c0) = prev?;
        let dt = now - t0;
        (dt > 0 && total >= c0).then(|| ((total - c0) as u128 * 1_000_000_000 / dt as u128) as u64)
    }

    /// Node usage, and usage per pod of every running container.
    pub async fn collect(&self) -> (Usage, Vec<PodUsage>) {
        let now = crate::runtime::now_nanos();
        let (cpu, total, available) = node_sample();
        let node = Usage {
            time: now,
            cpu_total_ns: cpu,
            cpu_nanocores: self.rate("node", now, cpu),
            memory_working_set: total.saturating_sub(available),
            memory_usage: total.saturating_sub(available),
            memory_rss: None,
        };
        let stats = self
            .cri
            .list_container_stats(cri::ListContainerStatsRequest { filter: None })
            .await
            .map(|r| r.stats)
            .unwrap_or_default();
        let containers = self
            .cri
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    state: Some(cri::ContainerStateValue { state: cri::ContainerState::ContainerRunning as i32 }),
                    ..Default::default()
                }),
            })
            .await
            .map(|r| r.containers)
            .unwrap_or_default();
        let created: HashMap<String, i64> = containers.iter().map(|c| (c.id.clone(), c.created_at)).collect();
        let mut pods: HashMap<String, PodUsage> = HashMap::new();
        let mut seen = vec!["node".to_string()];
        for s in stats {
            let Some(attr) = s.attributes else { continue };
            let labels = &attr.labels;
            let (Some(pod), Some(ns), Some(uid)) =
                (labels.get(LABEL_POD_NAME), labels.get(LABEL_POD_NAMESPACE), labels.get(LABEL_POD_UID))
            else {
                continue;
            };
            let name = labels.get(LABEL_CONTAINER_NAME).cloned().or(attr.metadata.map(|m| m.name)).unwrap_or_default();
            let cpu = s.cpu.unwrap_or_default();
            let mem = s.memory.unwrap_or_default();
            let total = cpu.usage_core_nano_seconds.map(|v| v.value).unwrap_or(0);
            let time = if cpu.timestamp > 0 { cpu.timestamp } else { now };
            seen.push(attr.id.clone());
            let usage = Usage {
                time,
                cpu_total_ns: total,
                cpu_nanocores: cpu.usage_nano_cores.map(|v| v.value).or_else(|| self.rate(&attr.id, time, total)),
                memory_working_set: mem.working_set_bytes.map(|v| v.value).unwrap_or(0),
                memory_usage: mem.usage_bytes.map(|v| v.value).unwrap_or(0),
                memory_rss: mem.rss_bytes.map(|v| v.value),
            };
            let entry = pods.entry(uid.clone()).or_insert_with(|| PodUsage {
                name: pod.clone(),
                namespace: ns.clone(),
                uid: uid.clone(),
                containers: vec![],
            });
            entry.containers.push(ContainerUsage {
                name,
                started_at: created.get(&attr.id).copied().unwrap_or(0),
                usage,
            });
        }
        self.last.lock().unwrap_or_else(|e| e.into_inner()).retain(|k, _| seen.contains(k));
        let mut pods: Vec<PodUsage> = pods.into_values().collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        (node, pods)
    }

    /// The Summary API document (`/stats/summary`).
    pub async fn summary(&self) -> Value {
        let (node, pods) = self.collect().await;
        let time = |ns: i64| jiff::Timestamp::from_nanosecond(ns as i128).map(|t| t.to_string()).unwrap_or_default();
        let cpu = |u: &Usage| {
            let mut v = json!({"time": time(u.time), "usageCoreNanoSeconds": u.cpu_total_ns});
            if let Some(n) = u.cpu_nanocores {
                v["usageNanoCores"] = json!(n);
            }
            v
        };
        let memory = |u: &Usage| {
            let mut v =
                json!({"time": time(u.time), "workingSetBytes": u.memory_working_set, "usageBytes": u.memory_usage});
            if let Some(r) = u.memory_rss {
                v["rssBytes"] = json!(r);
            }
            v
        };
        let pods: Vec<Value> = pods
            .iter()
            .map(|p| {
                let cpu_total: u64 = p.containers.iter().map(|c| c.usage.cpu_total_ns).sum();
                let nanocores: Option<u64> = p.containers.iter().map(|c| c.usage.cpu_nanocores).sum();
                let ws: u64 = p.containers.iter().map(|c| c.usage.memory_working_set).sum();
                let mem: u64 = p.containers.iter().map(|c| c.usage.memory_usage).sum();
                let t = p.containers.iter().map(|c| c.usage.time).max().unwrap_or(0);
                let pod_usage = Usage {
                    time: t,
                    cpu_total_ns: cpu_total,
                    cpu_nanocores: nanocores,
                    memory_working_set: ws,
                    memory_usage: mem,
                    memory_rss: None,
                };
                json!({
                    "podRef": {"name": p.name, "namespace": p.namespace, "uid": p.uid},
                    "startTime": time(p.containers.iter().map(|c| c.started_at).filter(|t| *t > 0).min().unwrap_or(0)),
                    "containers": p.containers.iter().map(|c| json!({
                        "name": c.name,
                        "startTime": time(c.started_at),
                        "cpu": cpu(&c.usage),
                        "memory": memory(&c.usage),
                    })).collect::<Vec<_>>(),
                    "cpu": cpu(&pod_usage),
                    "memory": memory(&pod_usage),
                })
            })
            .collect();
        json!({
            "node": {
                "nodeName": self.node,
                "startTime": self.started.to_string(),
                "cpu": cpu(&node),
                "memory": memory(&node),
            },
            "pods": pods,
        })
    }

    /// `/metrics/resource` in Prometheus text format, with the metric names metrics-server reads.
    pub async fn resource_metrics(&self) -> String {
        let (node, pods) = self.collect().await;
        let ms = |ns: i64| ns / 1_000_000;
        let mut out = String::new();
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} [STABLE] {help}\n# TYPE {name} {kind}");
        };
        head(
            &mut out,
            "container_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the container in core-seconds",
        );
        for p in &pods {
            for c in &p.containers {
                let _ = writeln!(
                    out,
                    "container_cpu_usage_seconds_total{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {}",
                    c.name,
                    p.namespace,
                    p.name,
                    c.usage.cpu_total_ns as f64 / 1e9,
                    ms(c.usage.time)
                );
            }
        }
        head(&mut out, "container_memory_working_set_bytes", "gauge", "Current working set of the container in bytes");
        for p in &pods {
            for c in &p.containers {
                let _ = writeln!(
                    out,
                    "container_memory_working_set_bytes{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {}",
                    c.name,
                    p.namespace,
                    p.name,
                    c.usage.memory_working_set,
                    ms(c.usage.time)
                );
            }
        }
        head(
            &mut out,
            "container_start_time_seconds",
            "gauge",
            "Start time of the container since unix epoch in seconds",
        );
        for p in &pods {
            for c in &p.containers {
                let _ = writeln!(
                    out,
                    "container_start_time_seconds{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {}",
                    c.name,
                    p.namespace,
                    p.name,
                    c.started_at as f64 / 1e9,
                    ms(c.usage.time)
                );
            }
        }
        head(
            &mut out,
            "node_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the node in core-seconds",
        );
        let _ = writeln!(out, "node_cpu_usage_seconds_total {} {}", node.cpu_total_ns as f64 / 1e9, ms(node.time));
        head(&mut out, "node_memory_working_set_bytes", "gauge", "Current working set of the node in bytes");
        let _ = writeln!(out, "node_memory_working_set_bytes {} {}", node.memory_working_set, ms(node.time));
        head(
            &mut out,
            "pod_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the pod in core-seconds",
        );
        for p in &pods {
            let total: u64 = p.containers.iter().map(|c| c.usage.cpu_total_ns).sum();
            let t = p.containers.iter().map(|c| c.usage.time).max().unwrap_or(node.time);
            let _ = writeln!(
                out,
                "pod_cpu_usage_seconds_total{{namespace=\"{}\",pod=\"{}\"}} {} {}",
                p.namespace,
                p.name,
                total as f64 / 1e9,
                ms(t)
            );
        }
        head(&mut out, "pod_memory_working_set_bytes", "gauge", "Current working set of the pod in bytes");
        for p in &pods {
            let ws: u64 = p.containers.iter().map(|c| c.usage.memory_working_set).sum();
            let t = p.containers.iter().map(|c| c.usage.time).max().unwrap_or(node.time);
            let _ = writeln!(
                out,
                "pod_memory_working_set_bytes{{namespace=\"{}\",pod=\"{}\"}} {} {}",
                p.namespace,
                p.name,
                ws,
                ms(t)
            );
        }
        head(&mut out, "scrape_error", "gauge", "1 if there was an error while getting container metrics, 0 otherwise");
        let _ = writeln!(out, "scrape_error 0");
        out
    }

    /// The kubelet's own `/metrics`.
    pub async fn kubelet_metrics(&self) -> String {
        let sandboxes = self
            .cri
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(cri::PodSandboxFilter {
                    state: Some(cri::PodSandboxStateValue { state: cri::PodSandboxState::SandboxReady as i32 }),
                    ..Default::default()
                }),
            })
            .await
            .map(|r| r.items.len())
            .unwrap_or(0);
        let containers = self
            .cri
            .list_containers(cri::ListContainersRequest { filter: None })
            .await
            .map(|r| r.containers)
            .unwrap_or_default();
        let count = |s: cri::ContainerState| containers.iter().filter(|c| c.state == s as i32).count();
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let rss_kib: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0);
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("").split_whitespace().collect();
        let ticks: u64 = fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP kubelet_node_name [ALPHA] The node's name. The count is always 1.\n# TYPE kubelet_node_name gauge"
        );
        let _ = writeln!(out, "kubelet_node_name{{node=\"{}\"}} 1", self.node);
        let _ = writeln!(
            out,
            "# HELP kubelet_running_pods [ALPHA] Number of pods that have a running pod sandbox\n# TYPE kubelet_running_pods gauge"
        );
        let _ = writeln!(out, "kubelet_running_pods {sandboxes}");
        let _ = writeln!(
            out,
            "# HELP kubelet_running_containers [ALPHA] Number of containers currently running\n# TYPE kubelet_running_containers gauge"
        );
        for (label, state) in [
            ("running", cri::ContainerState::ContainerRunning),
            ("exited", cri::ContainerState::ContainerExited),
            ("created", cri::ContainerState::ContainerCreated),
        ] {
            let _ = writeln!(out, "kubelet_running_containers{{container_state=\"{label}\"}} {}", count(state));
        }
        let _ = writeln!(
            out,
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge"
        );
        let _ = writeln!(out, "process_resident_memory_bytes {}", rss_kib * 1024);
        let _ = writeln!(
            out,
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n# TYPE process_cpu_seconds_total counter"
        );
        let _ = writeln!(out, "process_cpu_seconds_total {}", ticks as f64 / 100.0);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::runtime::fake::FakeRuntime;

    async fn one_pod(cri: &Cri) {
        let labels = HashMap::from([
            (LABEL_POD_NAME.to_string(), "web".to_string()),
            (LABEL_POD_NAMESPACE.to_string(), "ns".to_string()),
            (LABEL_POD_UID.to_string(), "u1".to_string()),
        ]);
        let sandbox = cri
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(cri::PodSandboxConfig {
                    metadata: Some(cri::PodSandboxMetadata {
                        name: "web".into(),
                        uid: "u1".into(),
                        namespace: "ns".into(),
                        attempt: 0,
                    }),
                    labels: labels.clone(),
                    ..Default::default()
                }),
                runtime_handler: String::new(),
            })
            .await
            .expect("sandbox")
            .pod_sandbox_id;
        let mut container_labels = labels;
        container_labels.insert(LABEL_CONTAINER_NAME.into(), "c".into());
        let id = cri
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox,
                config: Some(cri::ContainerConfig {
                    metadata: Some(cri::ContainerMetadata { name: "c".into(), attempt: 0 }),
                    labels: container_labels,
                    ..Default::default()
                }),
                sandbox_config: None,
            })
            .await
            .expect("container")
            .container_id;
        cri.start_container(cri::StartContainerRequest { container_id: id }).await.expect("start");
    }

    #[tokio::test]
    async fn usage_is_served_as_summary_resource_metrics_and_kubelet_metrics() {
        let cri = Cri::new(Arc::new(FakeRuntime::new()));
        one_pod(&cri).await;
        let stats = Stats::new(cri, "n1");
        let first = stats.summary().await;
        assert_eq!(first["node"]["nodeName"], "n1");
        assert!(first["node"]["memory"]["workingSetBytes"].as_u64().is_some_and(|b| b > 0), "{first}");
        let pod = &first["pods"][0];
        assert_eq!(pod["podRef"], json!({"name": "web", "namespace": "ns", "uid": "u1"}));
        assert_eq!(pod["containers"][0]["name"], "c");
        assert_eq!(pod["containers"][0]["memory"]["workingSetBytes"], 1 << 20);
        assert!(pod["containers"][0]["cpu"].get("usageNanoCores").is_none(), "one sample gives no rate yet");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let second = stats.summary().await;
        assert!(second["pods"][0]["containers"][0]["cpu"]["usageNanoCores"].as_u64().is_some(), "{second}");

        let text = stats.resource_metrics().await;
        for want in [
            "# TYPE container_cpu_usage_seconds_total counter",
            "container_memory_working_set_bytes{container=\"c\",namespace=\"ns\",pod=\"web\"} 1048576 ",
            "pod_memory_working_set_bytes{namespace=\"ns\",pod=\"web\"} 1048576 ",
            "node_cpu_usage_seconds_total ",
            "scrape_error 0",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
        let own = stats.kubelet_metrics().await;
        for want in [
            "kubelet_node_name{node=\"n1\"} 1",
            "kubelet_running_pods 1",
            "kubelet_running_containers{container_state=\"running\"} 1",
        ] {
            assert!(own.contains(want), "{want} in\n{own}");
        }
    }
}
