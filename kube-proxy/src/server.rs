//! The proxy's small HTTP servers: `/healthz` and `/livez` (`--healthz-bind-address`),
//! `/metrics` (`--metrics-bind-address`), and one health-check node port per
//! `externalTrafficPolicy: Local` LoadBalancer Service, which tells a load balancer whether this
//! node has a ready local endpoint (200) or not (503), as upstream.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::model::ServicePort;

/// One answer: status, content type, body.
pub type Answer = (StatusCode, &'static str, String);

/// Answers every request on `listener` with `handler(path)` until `stop`.
pub async fn serve<F>(listener: TcpListener, handler: F, stop: CancellationToken)
where
    F: Fn(&str) -> Answer + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    loop {
        let (tcp, _) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "Accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let (status, content_type, body) = handler(req.uri().path());
                let mut resp = Response::new(Full::new(Bytes::from(body)));
                *resp.status_mut() = status;
                resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
        });
    }
}

/// Sync metrics (upstream's names, `kubeproxy_` prefix) and the health the healthz server reports.
pub struct Metrics {
    registry: Registry,
    pub sync_duration: Histogram,
    pub last_sync_timestamp: Gauge<f64, AtomicU64>,
    pub restore_failures: Counter,
    pub full_syncs: Counter,
    pub partial_syncs: Counter,
    last_ok: Mutex<Option<(Instant, SystemTime)>>,
    /// A healthy proxy applied rules at least this recently (twice the resync period, as the
    /// periodic resync refreshes it).
    stale_after: Duration,
}

impl Metrics {
    pub fn new(sync_period: Duration) -> Metrics {
        let mut registry = Registry::with_prefix("kubeproxy");
        let sync_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let last_sync_timestamp = Gauge::<f64, AtomicU64>::default();
        let restore_failures = Counter::default();
        let full_syncs = Counter::default();
        let partial_syncs = Counter::default();
        registry.register(
            "sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            sync_duration.clone(),
        );
        registry.register(
            "sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            last_sync_timestamp.clone(),
        );
        registry.register(
            "sync_proxy_rules_iptables_restore_failures",
            "Cumulative proxy iptables restore failures",
            restore_failures.clone(),
        );
        registry.register("sync_full_proxy_rules", "Full syncs of the proxy rules", full_syncs.clone());
        registry.register("sync_partial_proxy_rules", "Partial syncs of the proxy rules", partial_syncs.clone());
        Metrics {
            registry,
            sync_duration,
            last_sync_timestamp,
            restore_failures,
            full_syncs,
            partial_syncs,
            last_ok: Mutex::new(None),
            stale_after: sync_period * 2 + Duration::from_secs(1),
        }
    }

    /// Rules were applied now.
    pub fn synced(&self) {
        let now = SystemTime::now();
        let secs = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        self.last_sync_timestamp.set(secs);
        *self.last_ok.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), now));
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "Could not encode metrics");
        }
        out
    }

    /// `/healthz` and `/livez`: 200 once rules were applied and kept fresh, else 503; the body
    /// has the time of the last successful sync, as upstream.
    pub fn healthz(&self) -> Answer {
        let last = *self.last_ok.lock().unwrap_or_else(|e| e.into_inner());
        let rfc3339 = |t: SystemTime| jiff::Timestamp::try_from(t).map(|t| t.to_string()).unwrap_or_default();
        let body = serde_json::json!({
            "lastUpdated": last.map(|(_, t)| rfc3339(t)).unwrap_or_default(),
            "currentTime": rfc3339(SystemTime::now()),
        })
        .to_string();
        let healthy = last.is_some_and(|(at, _)| at.elapsed() < self.stale_after);
        let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        (status, "application/json", body)
    }

    /// The handler for the metrics address.
    pub fn metrics_answer(&self, path: &str) -> Answer {
        match path {
            "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", self.encode()),
            "/healthz" | "/livez" => self.healthz(),
            _ => (StatusCode::NOT_FOUND, "text/plain", format!("404 page not found: {path}\n")),
        }
    }

    /// The handler for the healthz address.
    pub fn healthz_answer(&self, path: &str) -> Answer {
        match path {
            "/healthz" | "/livez" => self.healthz(),
            _ => (StatusCode::NOT_FOUND, "text/plain", format!("404 page not found: {path}\n")),
        }
    }
}

/// What one health-check node port reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub namespace: String,
    pub name: String,
    pub local_endpoints: usize,
}

/// The health-check node ports `services` need on node `node`, with their local ready endpoints.
pub fn health_checks(services: &[ServicePort], node: &str) -> HashMap<u16, HealthCheck> {
    let mut out: HashMap<u16, HealthCheck> = HashMap::new();
    for sp in services {
        let Some(port) = sp.health_check_node_port else { continue };
        let local = sp.endpoints.iter().filter(|e| e.ready && e.node_name.as_deref() == Some(node)).count();
        let entry = out.entry(port).or_insert_with(|| HealthCheck {
            namespace: sp.namespace.clone(),
            name: sp.name.clone(),
            local_endpoints: 0,
        });
        // Several ports of one Service share its health-check port; count each endpoint once.
        entry.local_endpoints = entry.local_endpoints.max(local);
    }
    out
}

/// The answer of a health-check node port.
pub fn health_check_answer(hc: Option<&HealthCheck>) -> Answer {
    let Some(hc) = hc else {
        return (StatusCode::SERVICE_UNAVAILABLE, "application/json", "{}".into());
    };
    let body = serde_json::json!({
        "service": {"namespace": hc.namespace, "name": hc.name},
        "localEndpoints": hc.local_endpoints,
        "serviceProxyHealthy": true,
    })
    .to_string();
    let status = if hc.local_endpoints > 0 { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, "application/json", body)
}

/// The listeners of the health-check node ports, opened and closed as Services change.
#[derive(Default)]
pub struct HealthCheckServer {
    state: Arc<RwLock<HashMap<u16, HealthCheck>>>,
    listeners: HashMap<u16, CancellationToken>,
}

impl HealthCheckServer {
    /// Serves exactly the ports of `wanted`. A port that cannot be bound is logged and tried
    /// again on the next sync.
    pub async fn update(&mut self, wanted: HashMap<u16, HealthCheck>) {
        let gone: Vec<u16> = self.listeners.keys().filter(|p| !wanted.contains_key(p)).copied().collect();
        for port in gone {
            if let Some(stop) = self.listeners.remove(&port) {
                stop.cancel();
                tracing::info!(port, "Closed health-check node port");
            }
        }
        let new: Vec<u16> = wanted.keys().filter(|p| !self.listeners.contains_key(p)).copied().collect();
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = wanted;
        for port in new {
            match TcpListener::bind(("0.0.0.0", port)).await {
                Ok(listener) => {
                    let stop = CancellationToken::new();
                    let state = self.state.clone();
                    let handler =
                        move |_: &str| health_check_answer(state.read().unwrap_or_else(|e| e.into_inner()).get(&port));
                    tokio::spawn(serve(listener, handler, stop.clone()));
                    self.listeners.insert(port, stop);
                    tracing::info!(port, "Serving health-check node port");
                }
                Err(e) => tracing::warn!(port, error = %e, "Could not open health-check node port"),
            }
        }
    }

    /// Closes every listener.
    pub fn stop(&mut self) {
        for (_, stop) in self.listeners.drain() {
            stop.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::build;
    use crate::model::tests::{Slice, Svc};

    #[test]
    fn health_check_ports_count_only_ready_local_endpoints() {
        let svc = Svc::new("ns1", "lb", "10.96.0.10")
            .type_("LoadBalancer")
            .port("http", "TCP", 80, Some(30080))
            .port("https", "TCP", 443, Some(30443))
            .etp_local(Some(32000));
        let slice = Slice::new("ns1", "lb-1", "lb")
            .port("http", "TCP", 8080)
            .port("https", "TCP", 8443)
            .ep("10.244.0.2", "me")
            .ep("10.244.0.3", "other")
            .ep_with("10.244.0.4", "me", (false, false, true));
        let ports = build(&[svc.0], &[slice.0]);
        let hcs = health_checks(&ports, "me");
        assert_eq!(hcs.len(), 1);
        let hc = &hcs[&32000];
        assert_eq!(hc.local_endpoints, 1);
        let (status, _, body) = health_check_answer(Some(hc));
        assert_eq!(status, StatusCode::OK);
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(json["localEndpoints"], 1);
        assert_eq!(json["service"]["name"], "lb");
        let (status, _, _) = health_check_answer(Some(&health_checks(&ports, "nobody")[&32000]));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn healthz_is_unavailable_until_rules_were_applied() {
        let m = Metrics::new(Duration::from_secs(30));
        assert_eq!(m.healthz().0, StatusCode::SERVICE_UNAVAILABLE);
        m.synced();
        assert_eq!(m.healthz().0, StatusCode::OK);
        let text = m.encode();
        assert!(text.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds"), "{text}");
        assert!(text.contains("kubeproxy_sync_proxy_rules_duration_seconds"), "{text}");
    }
}
