//! The pod's status from what the runtime reports and what the kubelet knows (probe results,
//! backoff, errors from the last sync): phase, conditions, IPs and container statuses, with
//! upstream's rules. Pure.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use proto::cri::ContainerState as CriState;

use super::actions::{ContainerObs, Observed, restart_policy, should_restart};

pub struct StatusInput<'a> {
    pub pod: &'a Pod,
    pub obs: &'a Observed,
    /// Container IDs whose readiness probe passes (or that have none).
    pub ready: &'a HashSet<String>,
    pub started: &'a HashSet<String>,
    /// Why a container has no running instance, from the last sync (ErrImagePull, ...).
    pub waiting: &'a HashMap<String, (String, String)>,
    pub backoff: &'a [(String, Duration)],
    /// Termination messages by container ID.
    pub messages: &'a HashMap<String, String>,
    pub pod_failed: bool,
    pub host_ip: &'a str,
    pub now: jiff::Timestamp,
}

fn time(nanos: i64) -> Option<Time> {
    (nanos > 0).then(|| Time(jiff::Timestamp::from_nanosecond(nanos as i128).unwrap_or(jiff::Timestamp::UNIX_EPOCH)))
}

fn terminated(c: &ContainerObs, messages: &HashMap<String, String>) -> ContainerStateTerminated {
    ContainerStateTerminated {
        container_id: Some(format!("docker://{}", c.id)),
        exit_code: c.exit_code,
        reason: Some(if c.reason.is_empty() {
            if c.exit_code == 0 { "Completed" } else { "Error" }.into()
        } else {
            c.reason.clone()
        }),
        message: messages.get(&c.id).cloned().filter(|m| !m.is_empty()),
        started_at: time(c.started_at),
        finished_at: time(c.finished_at),
        signal: None,
    }
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting { reason: Some(reason.into()), message }),
        ..Default::default()
    }
}

/// Kubernetes' QoS class from requests and limits.
pub fn qos_class(pod: &Pod) -> &'static str {
    let spec = pod.spec.clone().unwrap_or_default();
    let containers: Vec<Container> =
        spec.init_containers.unwrap_or_default().into_iter().chain(spec.containers).collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let r = c.resources.clone().unwrap_or_default();
        let limits = r.limits.unwrap_or_default();
        let requests = r.requests.unwrap_or_default();
        if !limits.is_empty() || !requests.is_empty() {
            any = true;
        }
        for res in ["cpu", "memory"] {
            let l = limits.get(res).and_then(|q| quantity::parse_milli(&q.0));
            let q = requests.get(res).and_then(|q| quantity::parse_milli(&q.0)).or(l);
            if l.is_none() || l != q {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// One container's status; `app_waiting_reason` is what a container without an instance waits
/// for (ContainerCreating, or PodInitializing while init containers run).
fn container_status(input: &StatusInput, c: &Container, is_init: bool, default_wait: &str) -> ContainerStatus {
    let obs = input.obs;
    let sandbox = obs.current_sandbox().map(|s| s.id.clone()).unwrap_or_default();
    let latest = obs.latest(&c.name);
    let pod_name = input.pod.metadata.name.clone().unwrap_or_default();
    let ns = input.pod.metadata.namespace.clone().unwrap_or_default();
    let uid = input.pod.metadata.uid.clone().unwrap_or_default();
    let mut status = ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_id: String::new(),
        ready: false,
        restart_count: latest.map(|l| l.attempt as i32).unwrap_or(0),
        started: Some(false),
        ..Default::default()
    };
    let recorded = input.waiting.get(&c.name);
    let Some(l) = latest else {
        let (reason, message) = recorded.cloned().unwrap_or((default_wait.to_string(), String::new()));
        status.state = Some(waiting(&reason, (!message.is_empty()).then_some(message)));
        return status;
    };
    status.container_id = Some(format!("docker://{}", l.id));
    status.image_id = l.image_ref.clone();
    let backoff = input.backoff.iter().find(|(n, _)| *n == c.name);
    match l.state {
        CriState::ContainerRunning => {
            status.state = Some(ContainerState {
                running: Some(ContainerStateRunning { started_at: time(l.started_at) }),
                ..Default::default()
            });
            status.started = Some(input.started.contains(&l.id));
            status.ready = input.ready.contains(&l.id) && input.started.contains(&l.id);
            if let Some(prev) = obs.previous(&c.name).filter(|p| p.state == CriState::ContainerExited) {
                status.last_state =
                    Some(ContainerState { terminated: Some(terminated(prev, input.messages)), ..Default::default() });
            }
        }
        CriState::ContainerCreated => {
            // A start that failed leaves a created container: say why it waits.
            let (reason, message) = recorded.cloned().unwrap_or(("ContainerCreating".to_string(), String::new()));
            status.state = Some(waiting(&reason, (!message.is_empty()).then_some(message)));
        }
        CriState::ContainerExited | CriState::ContainerUnknown => {
            let last = ContainerState { terminated: Some(terminated(l, input.messages)), ..Default::default() };
            let restarting = l.sandbox_id == sandbox
                && (is_sidecar(c) || should_restart(restart_policy(input.pod), l.exit_code))
                && !input.pod_failed;
            if let Some((_, wait)) = backoff {
                let secs = wait.as_secs().max(1);
                status.state = Some(waiting(
                    "CrashLoopBackOff",
                    Some(format!("back-off {secs}s restarting failed container={} pod={pod_name}_{ns}({uid})", c.name)),
                ));
                status.last_state = Some(last);
            } else if let Some((reason, message)) = recorded.filter(|_| restarting) {
                status.state = Some(waiting(reason, (!message.is_empty()).then(|| message.clone())));
                status.last_state = Some(last);
            } else {
                status.state = Some(last);
                if is_init && l.exit_code == 0 {
                    status.ready = true;
                }
                if let Some(prev) = obs.previous(&c.name).filter(|p| p.state == CriState::ContainerExited) {
                    status.last_state = Some(ContainerState {
                        terminated: Some(terminated(prev, input.messages)),
                        ..Default::default()
                    });
                }
            }
        }
    }
    status
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn condition(
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    previous: &[PodCondition],
    now: &Time,
) -> PodCondition {
    let status = if ok { "True" } else { "False" }.to_string();
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    PodCondition {
        type_: type_.into(),
        status,
        reason: if ok { None } else { reason.map(str::to_string) },
        message: if ok { None } else { message },
        last_transition_time: Some(since),
        last_probe_time: None,
        observed_generation: None,
    }
}

pub fn generate_pod_status(input: &StatusInput) -> PodStatus {
    let pod = input.pod;
    let spec = pod.spec.clone().unwrap_or_default();
    let old = pod.status.clone().unwrap_or_default();
    let now = Time(input.now);
    let init = spec.init_containers.clone().unwrap_or_default();

    let sandbox = input.obs.current_sandbox().map(|s| s.id.clone()).unwrap_or_default();
    let mut incomplete_init = Vec::new();
    for c in &init {
        let latest = input.obs.latest_in(&sandbox, &c.name);
        let done = if is_sidecar(c) {
            latest.is_some_and(|l| l.state == CriState::ContainerRunning && input.started.contains(&l.id))
        } else {
            latest.is_some_and(|l| l.state == CriState::ContainerExited && l.exit_code == 0)
        };
        if !done {
            incomplete_init.push(c.name.clone());
        }
    }
    // A finished pod's init containers are history: it stays initialized.
    let sandbox_ready = input.obs.current_sandbox().is_some_and(|s| s.ready);
    let initialized = incomplete_init.is_empty()
        || (!sandbox_ready && spec.containers.iter().any(|c| input.obs.latest(&c.name).is_some()));
    let app_wait = if initialized { "ContainerCreating" } else { "PodInitializing" };
    let init_statuses: Vec<ContainerStatus> =
        init.iter().map(|c| container_status(input, c, true, "PodInitializing")).collect();
    let statuses: Vec<ContainerStatus> =
        spec.containers.iter().map(|c| container_status(input, c, false, app_wait)).collect();

    let policy = restart_policy(pod);
    let (mut running, mut waiting_n, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in &statuses {
        let st = s.state.clone().unwrap_or_default();
        if st.running.is_some() {
            running += 1;
        } else if let Some(t) = st.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if s.last_state.as_ref().is_some_and(|l| l.terminated.is_some()) {
            stopped += 1;
        } else {
            waiting_n += 1;
        }
    }
    let phase = if matches!(old.phase.as_deref(), Some("Succeeded" | "Failed")) {
        old.phase.clone().unwrap_or_default()
    } else if input.pod_failed {
        "Failed".into()
    } else if !initialized || waiting_n > 0 {
        "Pending".into()
    } else if running > 0 {
        "Running".into()
    } else if stopped > 0 {
        if policy == "Always" {
            "Running".into()
        } else if stopped == succeeded {
            "Succeeded".into()
        } else if policy == "OnFailure" {
            "Running".into()
        } else {
            "Failed".into()
        }
    } else {
        "Pending".into()
    };
    let terminal = phase == "Succeeded" || phase == "Failed";

    let previous = old.conditions.clone().unwrap_or_default();
    let unready: Vec<String> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.clone())
        .chain(init.iter().zip(&init_statuses).filter(|(c, s)| is_sidecar(c) && !s.ready).map(|(_, s)| s.name.clone()))
        .collect();
    let containers_ready = unready.is_empty() && !terminal;
    let gates: Vec<String> =
        spec.readiness_gates.clone().unwrap_or_default().into_iter().map(|g| g.condition_type).collect();
    let gates_ok = gates.iter().all(|g| previous.iter().any(|c| &c.type_ == g && c.status == "True"));
    let (cr_reason, ready_reason) =
        if terminal { ("PodCompleted", "PodCompleted") } else { ("ContainersNotReady", "ContainersNotReady") };
    let unready_msg = (!unready.is_empty()).then(|| format!("containers with unready status: [{}]", unready.join(" ")));
    let mut conditions = vec![
        condition(
            "PodReadyToStartContainers",
            input.obs.current_sandbox().is_some_and(|s| s.ready),
            None,
            None,
            &previous,
            &now,
        ),
        condition(
            "Initialized",
            initialized,
            Some("ContainersNotInitialized"),
            Some(format!("containers with incomplete status: [{}]", incomplete_init.join(" "))),
            &previous,
            &now,
        ),
        condition(
            "Ready",
            containers_ready && gates_ok,
            Some(if containers_ready && !gates_ok { "ReadinessGatesNotReady" } else { ready_reason }),
            if containers_ready && !gates_ok {
                Some("the status of pod readiness gate is not \"True\"".into())
            } else {
                unready_msg.clone()
            },
            &previous,
            &now,
        ),
        condition("ContainersReady", containers_ready, Some(cr_reason), unready_msg, &previous, &now),
    ];
    // Conditions others own (PodScheduled, readiness gates, DisruptionTarget) stay.
    for c in &previous {
        if !conditions.iter().any(|n| n.type_ == c.type_) {
            conditions.push(c.clone());
        }
    }
    if !conditions.iter().any(|c| c.type_ == "PodScheduled") {
        conditions.push(condition("PodScheduled", true, None, None, &previous, &now));
    }

    let pod_ip = input.obs.current_sandbox().map(|s| s.ip.clone()).filter(|ip| !ip.is_empty());
    let host_network = spec.host_network == Some(true);
    let pod_ip = if host_network { Some(input.host_ip.to_string()).filter(|s| !s.is_empty()) } else { pod_ip };
    let pod_ip = pod_ip.or_else(|| if terminal { old.pod_ip.clone() } else { None });
    PodStatus {
        phase: Some(phase),
        conditions: Some(conditions),
        host_ip: Some(input.host_ip.to_string()).filter(|s| !s.is_empty()),
        host_ips: Some(vec![HostIP { ip: input.host_ip.to_string() }]).filter(|_| !input.host_ip.is_empty()),
        pod_ip: pod_ip.clone(),
        pod_ips: pod_ip.map(|ip| vec![PodIP { ip }]),
        start_time: old.start_time.clone().or(Some(now)),
        container_statuses: Some(statuses),
        init_container_statuses: (!init.is_empty()).then_some(init_statuses),
        qos_class: Some(qos_class(pod).into()),
        ..old
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::actions::SandboxObs;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": spec}),
        )
        .expect("pod")
    }

    fn obs(containers: Vec<(&str, CriState, i32, u32)>) -> Observed {
        Observed {
            sandboxes: vec![SandboxObs { id: "sb".into(), ready: true, ip: "10.244.0.9".into(), ..Default::default() }],
            containers: containers
                .into_iter()
                .map(|(name, state, code, attempt)| ContainerObs {
                    id: format!("{name}-{attempt}"),
                    sandbox_id: "sb".into(),
                    name: name.into(),
                    state,
                    exit_code: code,
                    attempt,
                    started_at: 1_000_000_000,
                    finished_at: if state == CriState::ContainerExited { 2_000_000_000 } else { 0 },
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn status_for(p: &Pod, o: &Observed, backoff: &[(String, Duration)]) -> PodStatus {
        let ids: HashSet<String> = o.running().map(|c| c.id.clone()).collect();
        let input = StatusInput {
            pod: p,
            obs: o,
            ready: &ids,
            started: &ids,
            waiting: &HashMap::new(),
            backoff,
            messages: &HashMap::new(),
            pod_failed: false,
            host_ip: "192.0.2.2",
            now: jiff::Timestamp::from_second(1_700_000_000).expect("time"),
        };
        generate_pod_status(&input)
    }

    fn cond(s: &PodStatus, t: &str) -> String {
        s.conditions
            .as_ref()
            .and_then(|cs| cs.iter().find(|c| c.type_ == t))
            .map(|c| c.status.clone())
            .unwrap_or_default()
    }

    #[test]
    fn phases_follow_upstream() {
        let two = serde_json::json!({"containers": [{"name": "a", "image": "i"}, {"name": "b", "image": "i"}]});
        let never = serde_json::json!({"restartPolicy": "Never", "containers": [{"name": "a", "image": "i"}]});
        let on_failure = serde_json::json!({"restartPolicy": "OnFailure", "containers": [{"name": "a", "image": "i"}]});
        use CriState::*;
        let cases: Vec<(&str, serde_json::Value, Observed, &str)> = vec![
            ("nothing yet", two.clone(), Observed::default(), "Pending"),
            ("one still creating", two.clone(), obs(vec![("a", ContainerRunning, 0, 0)]), "Pending"),
            (
                "all running",
                two.clone(),
                obs(vec![("a", ContainerRunning, 0, 0), ("b", ContainerRunning, 0, 0)]),
                "Running",
            ),
            (
                "Always: exited is Running",
                two.clone(),
                obs(vec![("a", ContainerExited, 0, 0), ("b", ContainerExited, 1, 0)]),
                "Running",
            ),
            ("Never: success", never.clone(), obs(vec![("a", ContainerExited, 0, 0)]), "Succeeded"),
            ("Never: failure", never.clone(), obs(vec![("a", ContainerExited, 3, 0)]), "Failed"),
            ("OnFailure: failure restarts", on_failure.clone(), obs(vec![("a", ContainerExited, 3, 0)]), "Running"),
            ("OnFailure: success", on_failure, obs(vec![("a", ContainerExited, 0, 0)]), "Succeeded"),
        ];
        for (name, spec, o, want) in cases {
            let p = pod(spec);
            let s = status_for(&p, &o, &[]);
            assert_eq!(s.phase.as_deref(), Some(want), "{name}");
        }
    }

    #[test]
    fn ready_conditions_and_container_states() {
        let p = pod(serde_json::json!({"containers": [{"name": "a", "image": "busybox"}]}));
        let o = obs(vec![("a", CriState::ContainerRunning, 0, 2), ("a", CriState::ContainerExited, 1, 1)]);
        let s = status_for(&p, &o, &[]);
        assert_eq!(cond(&s, "Ready"), "True");
        assert_eq!(cond(&s, "ContainersReady"), "True");
        assert_eq!(cond(&s, "Initialized"), "True");
        assert_eq!(cond(&s, "PodScheduled"), "True");
        assert_eq!(s.pod_ip.as_deref(), Some("10.244.0.9"));
        assert_eq!(s.host_ip.as_deref(), Some("192.0.2.2"));
        assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));
        let cs = &s.container_statuses.as_ref().expect("statuses")[0];
        assert_eq!(cs.restart_count, 2);
        assert!(cs.ready);
        assert_eq!(cs.container_id.as_deref(), Some("docker://a-2"));
        let last = cs.last_state.as_ref().and_then(|l| l.terminated.as_ref()).expect("last state");
        assert_eq!(last.exit_code, 1);
        assert_eq!(last.reason.as_deref(), Some("Error"));
    }

    #[test]
    fn crash_loop_shows_waiting_with_last_state() {
        let p = pod(serde_json::json!({"containers": [{"name": "a", "image": "busybox"}]}));
        let o = obs(vec![("a", CriState::ContainerExited, 1, 3)]);
        let s = status_for(&p, &o, &[("a".into(), Duration::from_secs(40))]);
        let cs = &s.container_statuses.as_ref().expect("statuses")[0];
        let w = cs.state.as_ref().and_then(|st| st.waiting.as_ref()).expect("waiting");
        assert_eq!(w.reason.as_deref(), Some("CrashLoopBackOff"));
        assert_eq!(w.message.as_deref(), Some("back-off 40s restarting failed container=a pod=p_ns(u)"));
        assert_eq!(cs.last_state.as_ref().and_then(|l| l.terminated.as_ref()).map(|t| t.exit_code), Some(1));
        assert_eq!(cs.restart_count, 3);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "Ready"), "False");
    }

    #[test]
    fn init_containers_hold_the_pod_pending() {
        let p = pod(
            serde_json::json!({"initContainers": [{"name": "i", "image": "busybox"}], "containers": [{"name": "a", "image": "busybox"}]}),
        );
        let o = obs(vec![("i", CriState::ContainerRunning, 0, 0)]);
        let s = status_for(&p, &o, &[]);
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(cond(&s, "Initialized"), "False");
        let app = &s.container_statuses.as_ref().expect("statuses")[0];
        assert_eq!(
            app.state.as_ref().and_then(|st| st.waiting.as_ref()).and_then(|w| w.reason.as_deref()),
            Some("PodInitializing")
        );
    }

    #[test]
    fn qos_classes() {
        let g = pod(
            serde_json::json!({"containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}),
        );
        let b = pod(serde_json::json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}]}));
        let e = pod(serde_json::json!({"containers": [{"name": "a"}]}));
        assert_eq!(qos_class(&g), "Guaranteed");
        assert_eq!(qos_class(&b), "Burstable");
        assert_eq!(qos_class(&e), "BestEffort");
    }
}
