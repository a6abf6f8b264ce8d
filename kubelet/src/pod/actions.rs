//! `compute_pod_actions`: what must happen to bring a pod's containers to its spec, decided from
//! what the runtime reports, before anything touches the runtime. Pure and table-tested.

use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use proto::cri::ContainerState;

use super::backoff::Backoff;

/// A sandbox of this pod as the runtime reports it.
#[derive(Clone, Debug, Default)]
pub struct SandboxObs {
    pub id: String,
    pub attempt: u32,
    pub ready: bool,
    pub created_at: i64,
    pub ip: String,
}

/// A container of this pod as the runtime reports it.
#[derive(Clone, Debug)]
pub struct ContainerObs {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u32,
    pub state: ContainerState,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub image: String,
    pub image_ref: String,
    pub log_path: String,
}

impl Default for ContainerObs {
    fn default() -> Self {
        ContainerObs {
            id: String::new(),
            sandbox_id: String::new(),
            name: String::new(),
            attempt: 0,
            state: ContainerState::ContainerUnknown,
            created_at: 0,
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            image: String::new(),
            image_ref: String::new(),
            log_path: String::new(),
        }
    }
}

/// Everything the runtime has for one pod: sandboxes newest first, containers newest first.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub sandboxes: Vec<SandboxObs>,
    pub containers: Vec<ContainerObs>,
}

impl Observed {
    pub fn sort(&mut self) {
        self.sandboxes.sort_by_key(|s| std::cmp::Reverse((s.attempt, s.created_at)));
        self.containers.sort_by_key(|c| std::cmp::Reverse((c.attempt, c.created_at)));
    }

    pub fn current_sandbox(&self) -> Option<&SandboxObs> {
        self.sandboxes.first()
    }

    /// The newest instance of container `name`, in any sandbox.
    pub fn latest(&self, name: &str) -> Option<&ContainerObs> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// The newest instance of `name` in sandbox `sandbox`.
    pub fn latest_in(&self, sandbox: &str, name: &str) -> Option<&ContainerObs> {
        self.containers.iter().find(|c| c.name == name && c.sandbox_id == sandbox)
    }

    /// The instance before the newest (for `lastState` and `logs --previous`).
    pub fn previous(&self, name: &str) -> Option<&ContainerObs> {
        self.containers.iter().filter(|c| c.name == name).nth(1)
    }

    pub fn running(&self) -> impl Iterator<Item = &ContainerObs> {
        self.containers.iter().filter(|c| c.state == ContainerState::ContainerRunning)
    }
}

/// What the kubelet knows beyond the runtime: probe results and restart backoff.
pub struct PlanContext<'a> {
    pub now: i64,
    pub backoff: &'a Backoff,
    /// Container IDs whose liveness or startup probe has failed: they are to be restarted.
    pub unhealthy: &'a HashSet<String>,
    /// Container IDs whose startup probe has passed (or that have none).
    pub started: &'a HashSet<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Which {
    Init(usize),
    App(usize),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodActions {
    /// Stop every container and the sandbox (the sandbox died, or the pod has failed).
    pub kill_pod: bool,
    /// Make a new sandbox with this attempt number.
    pub create_sandbox: Option<u32>,
    /// The sandbox to start containers in.
    pub sandbox_id: String,
    /// Containers to start now, in order.
    pub start: Vec<Which>,
    /// Running containers to stop: (container ID, name, why).
    pub kill: Vec<(String, String, String)>,
    /// Containers that wait for restart backoff: (name, remaining).
    pub backoff: Vec<(String, Duration)>,
    /// An init container failed and the pod does not restart: the pod has failed.
    pub pod_failed: bool,
}

pub fn restart_policy(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always")
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Whether a container that exited with `exit_code` restarts under `policy`.
pub fn should_restart(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

pub fn compute_pod_actions(pod: &Pod, obs: &Observed, ctx: &PlanContext) -> PodActions {
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = restart_policy(pod).to_string();
    let init = spec.init_containers.clone().unwrap_or_default();
    let mut actions = PodActions::default();

    let sandbox = obs.current_sandbox().filter(|s| s.ready);
    let Some(sandbox) = sandbox else {
        let attempt = obs.current_sandbox().map(|s| s.attempt + 1).unwrap_or(0);
        actions.kill_pod = obs.running().next().is_some() || obs.current_sandbox().is_some();
        // A pod that never restarts and already ran does not get a second sandbox.
        if policy == "Never" && obs.current_sandbox().is_some() && !obs.containers.is_empty() {
            return actions;
        }
        actions.create_sandbox = Some(attempt);
        if init.is_empty() {
            actions.start = (0..spec.containers.len()).map(Which::App).collect();
        } else {
            actions.start = vec![Which::Init(0)];
        }
        return actions;
    };
    actions.sandbox_id = sandbox.id.clone();

    // Init containers, in order; native sidecars keep running once started.
    let mut initialized = true;
    for (i, c) in init.iter().enumerate() {
        let latest = obs.latest_in(&sandbox.id, &c.name);
        if is_sidecar(c) {
            match latest {
                None => {
                    actions.start.push(Which::Init(i));
                    initialized = false;
                    break;
                }
                Some(l) if l.state == ContainerState::ContainerRunning => {
                    if ctx.unhealthy.contains(&l.id) {
                        actions.kill.push((l.id.clone(), c.name.clone(), "Unhealthy".into()));
                    } else if !ctx.started.contains(&l.id) {
                        initialized = false;
                        break;
                    }
                }
                Some(l) => {
                    restart_or_backoff(&mut actions, ctx, c, l, Which::Init(i));
                    if l.started_at == 0 {
                        initialized = false;
                        break;
                    }
                }
            }
            continue;
        }
        match latest {
            None => {
                actions.start.push(Which::Init(i));
                initialized = false;
                break;
            }
            Some(l) if l.state == ContainerState::ContainerExited && l.exit_code == 0 => continue,
            Some(l) if l.state == ContainerState::ContainerExited => {
                if policy == "Never" {
                    actions.pod_failed = true;
                    actions.kill_pod = true;
                    actions.start.clear();
                } else {
                    restart_or_backoff(&mut actions, ctx, c, l, Which::Init(i));
                }
                initialized = false;
                break;
            }
            Some(l) if l.state == ContainerState::ContainerCreated => {
                // Created but never started (the start failed): replace it, after backoff.
                replace_unstarted(&mut actions, ctx, c, l, Which::Init(i));
                initialized = false;
                break;
            }
            Some(_) => {
                initialized = false;
                break;
            }
        }
    }
    if !initialized {
        return actions;
    }

    for (i, c) in spec.containers.iter().enumerate() {
        match obs.latest_in(&sandbox.id, &c.name) {
            None => actions.start.push(Which::App(i)),
            Some(l) => match l.state {
                ContainerState::ContainerRunning => {
                    if ctx.unhealthy.contains(&l.id) {
                        actions.kill.push((l.id.clone(), c.name.clone(), "Unhealthy".into()));
                    }
                }
                ContainerState::ContainerCreated => replace_unstarted(&mut actions, ctx, c, l, Which::App(i)),
                ContainerState::ContainerExited | ContainerState::ContainerUnknown => {
                    if should_restart(&policy, l.exit_code) {
                        restart_or_backoff(&mut actions, ctx, c, l, Which::App(i));
                    }
                }
            },
        }
    }
    actions
}

/// A container whose start failed: removed and started again once its backoff allows.
fn replace_unstarted(actions: &mut PodActions, ctx: &PlanContext, c: &Container, l: &ContainerObs, which: Which) {
    match ctx.backoff.remaining(&c.name, l.created_at, ctx.now) {
        Some(wait) => actions.backoff.push((c.name.clone(), wait)),
        None => {
            actions.kill.push((l.id.clone(), c.name.clone(), "NotStarted".into()));
            actions.start.push(which);
        }
    }
}

fn restart_or_backoff(actions: &mut PodActions, ctx: &PlanContext, c: &Container, last: &ContainerObs, which: Which) {
    match ctx.backoff.remaining(&c.name, last.finished_at, ctx.now) {
        Some(wait) => actions.backoff.push((c.name.clone(), wait)),
        None => actions.start.push(which),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": json,
        }))
        .expect("pod")
    }

    fn running(id: &str, name: &str, sandbox: &str) -> ContainerObs {
        ContainerObs {
            id: id.into(),
            name: name.into(),
            sandbox_id: sandbox.into(),
            state: ContainerState::ContainerRunning,
            started_at: 1,
            ..Default::default()
        }
    }

    fn exited(id: &str, name: &str, sandbox: &str, code: i32, attempt: u32) -> ContainerObs {
        ContainerObs {
            id: id.into(),
            name: name.into(),
            sandbox_id: sandbox.into(),
            state: ContainerState::ContainerExited,
            exit_code: code,
            attempt,
            started_at: 1,
            finished_at: 1_000_000_000,
            ..Default::default()
        }
    }

    fn ready_sandbox() -> SandboxObs {
        SandboxObs { id: "sb".into(), ready: true, ..Default::default() }
    }

    struct Case {
        name: &'static str,
        spec: serde_json::Value,
        obs: Observed,
        unhealthy: &'static [&'static str],
        backoff_on: &'static [&'static str],
        want: PodActions,
    }

    fn two_containers() -> serde_json::Value {
        serde_json::json!({"containers": [{"name": "a", "image": "i"}, {"name": "b", "image": "i"}]})
    }

    #[test]
    fn table() {
        let cases = vec![
            Case {
                name: "new pod: sandbox and every container",
                spec: two_containers(),
                obs: Observed::default(),
                unhealthy: &[],
                backoff_on: &[],
                want: PodActions {
                    create_sandbox: Some(0),
                    start: vec![Which::App(0), Which::App(1)],
                    ..Default::default()
                },
            },
            Case {
                name: "new pod with init containers starts only the first",
                spec: serde_json::json!({"initContainers": [{"name": "i1", "image": "i"}], "containers": [{"name": "a", "image": "i"}]}),
                obs: Observed::default(),
                unhealthy: &[],
                backoff_on: &[],
                want: PodActions { create_sandbox: Some(0), start: vec![Which::Init(0)], ..Default::default() },
            },
            Case {
                name: "dead sandbox: kill everything and make attempt 1",
                spec: two_containers(),
                obs: Observed {
                    sandboxes: vec![SandboxObs { id: "sb".into(), ready: false, ..Default::default() }],
                    containers: vec![running("c1", "a", "sb")],
                },
                unhealthy: &[],
                backoff_on: &[],
                want: PodActions {
                    kill_pod: true,
                    create_sandbox: Some(1),
                    start: vec![Which::App(0), Which::App(1)],
                    ..Default::default()
                },
            },
            Case {
                name: "steady state: nothing to do",
                spec: two_containers(),
                obs: Observed {
                    sandboxes: vec![ready_sandbox()],
                    containers: vec![running("c1", "a", "sb"), running("c2", "b", "sb")],
                },
                unhealthy: &[],
                backoff_on: &[],
                want: PodActions { sandbox_id: "sb".into(), ..Default::default() },
            },
            Case {
                name: "crashed container restarts under Always",
                spec: two_containers(),
                obs: Observed {
                    sandboxes: vec![ready_sandbox()],
                    containers: vec![running("c1", "a", "sb"), exited("c2", "b", "sb", 0, 0)],
                },
                unhealthy: &[],
                backoff_on: &[],
                want: PodActions { sandbox_id: "sb".into(), start: vec![Which::App(1)], ..Default::default() },
            },
            Case {
                name: "crash in backoff waits",
                spec: two_containers(),
                obs: Observed {
                    sandboxes: vec![ready_sandbox()],
                    containers: vec![running("c1", "a", "sb"), exited("c2", "b", "sb", 1, 3)],
                },
                unhealthy: &[],
                backoff_on: &["b"],
                want: PodActions {
                    sandbox_id: "sb".into(),
                    backoff: vec![("b".into(), Duration::from_secs(10))],
                    ..Default::default()
                },
            },
            Case {
                name: "OnFailure keeps a container that succeeded",
                spec: serde_json::json!({"restartPolicy": "OnFailure", "containers": [{"name": "a", "image": "i"}, {"name": "b", "image": "i"}]}),
                obs: Observed {
                    sandboxes: vec![ready_sandbox()],
                    containers: vec![exited("c1", "a", "sb", 0, 0), exited("c2", "b", "sb", 2, 0)],
                },
                unhealthy: &[],
                backoff_on: &[],
                want: PodActions { sandbox_id: "sb".into(), start: vec![Which::App(1)], ..Default::default() },
            },
            Case {
                name: "Never restarts nothing",
                spec: serde_json::json!({"restartPolicy": "Never", "containers": [{"name": "a", "image": "i"}]}),
                obs: Observed { sandboxes: vec![ready_sandbox()], containers: vec![exited("c1", "a", "sb", 1, 0)] },
                unhealthy: &[],
                backoff_on: &[],
                want: PodActions { sandbox_id: "sb".into(), ..Default::default() },
            },
            Case {
                name: "Never with a dead sandbox after running: no second sandbox",
                spec: serde_json::json!({"restartPolicy": "Never", "containers": [{"name": "a", "image": "i"}]}),
                obs: Observed {
                    sandboxes: vec![SandboxObs { id: "sb".into(), ready: false, ..Default::default() }],
                    containers: vec![exited("c1", "a", "sb", 0, 0)],
                },
                unhealthy: &[],
                backoff_on: &[],
                want: PodActions { kill_pod: true, ..Default::default() },
            },
            Case {
                name: "liveness failure kills the container",
                spec: two_containers(),
                obs: Observed {
                    sandboxes: vec![ready_sandbox()],
                    containers: vec![running("c1", "a", "sb"), running("c2", "b", "sb")],
                },
                unhealthy: &["c1"],
                backoff_on: &[],
                want: PodActions {
                    sandbox_id: "sb".into(),
                    kill: vec![("c1".into(), "a".into(), "Unhealthy".into())],
                    ..Default::default()
                },
            },
            Case {
                name: "a container whose start failed is replaced",
                spec: two_containers(),
                obs: Observed {
                    sandboxes: vec![ready_sandbox()],
                    containers: vec![
                        running("c1", "a", "sb"),
                        ContainerObs {
                            id: "c2".into(),
                            name: "b".into(),
                            sandbox_id: "sb".into(),
                            state: ContainerState::ContainerCreated,
                            created_at: 1_000_000_000,
                            ..Default::default()
                        },
                    ],
                },
                unhealthy: &[],
                backoff_on: &[],
                want: PodActions {
                    sandbox_id: "sb".into(),
                    kill: vec![("c2".into(), "b".into(), "NotStarted".into())],
                    start: vec![Which::App(1)],
                    ..Default::default()
                },
            },
            Case {
                name: "a failed start is retried only after its backoff",
                spec: two_containers(),
                obs: Observed {
                    sandboxes: vec![ready_sandbox()],
                    containers: vec![
                        running("c1", "a", "sb"),
                        ContainerObs {
                            id: "c2".into(),
                            name: "b".into(),
                            sandbox_id: "sb".into(),
                            state: ContainerState::ContainerCreated,
                            created_at: 1_000_000_000,
                            ..Default::default()
                        },
                    ],
                },
                unhealthy: &[],
                backoff_on: &["b"],
                want: PodActions {
                    sandbox_id: "sb".into(),
                    backoff: vec![("b".into(), Duration::from_secs(10))],
                    ..Default::default()
                },
            },
            Case {
                name: "init containers run in order",
                spec: serde_json::json!({"initContainers": [{"name": "i1", "image": "i"}, {"name": "i2", "image": "i"}], "containers": [{"name": "a", "image": "i"}]}),
                obs: Observed { sandboxes: vec![ready_sandbox()], containers: vec![exited("x1", "i1", "sb", 0, 0)] },
                unhealthy: &[],
                backoff_on: &[],
                want: PodActions { sandbox_id: "sb".into(), start: vec![Which::Init(1)], ..Default::default() },
            },
            Case {
                name: "a running init container blocks the app containers",
                spec: serde_json::json!({"initContainers": [{"name": "i1", "image": "i"}], "containers": [{"name": "a", "image": "i"}]}),
                obs: Observed { sandboxes: vec![ready_sandbox()], containers: vec![running("x1", "i1", "sb")] },
                unhealthy: &[],
                backoff_on: &[],
                want: PodActions { sandbox_id: "sb".into(), ..Default::default() },
            },
            Case {
                name: "failed init container under Never fails the pod",
                spec: serde_json::json!({"restartPolicy": "Never", "initContainers": [{"name": "i1", "image": "i"}], "containers": [{"name": "a", "image": "i"}]}),
                obs: Observed { sandboxes: vec![ready_sandbox()], containers: vec![exited("x1", "i1", "sb", 1, 0)] },
                unhealthy: &[],
                backoff_on: &[],
                want: PodActions { sandbox_id: "sb".into(), kill_pod: true, pod_failed: true, ..Default::default() },
            },
            Case {
                name: "failed init container under Always retries it",
                spec: serde_json::json!({"initContainers": [{"name": "i1", "image": "i"}], "containers": [{"name": "a", "image": "i"}]}),
                obs: Observed { sandboxes: vec![ready_sandbox()], containers: vec![exited("x1", "i1", "sb", 1, 0)] },
                unhealthy: &[],
                backoff_on: &[],
                want: PodActions { sandbox_id: "sb".into(), start: vec![Which::Init(0)], ..Default::default() },
            },
            Case {
                name: "a started sidecar lets the next init container and the app run",
                spec: serde_json::json!({"initContainers": [{"name": "side", "image": "i", "restartPolicy": "Always"}], "containers": [{"name": "a", "image": "i"}]}),
                obs: Observed { sandboxes: vec![ready_sandbox()], containers: vec![running("s1", "side", "sb")] },
                unhealthy: &[],
                backoff_on: &[],
                want: PodActions { sandbox_id: "sb".into(), start: vec![Which::App(0)], ..Default::default() },
            },
            Case {
                name: "an exited sidecar restarts even under Never",
                spec: serde_json::json!({"restartPolicy": "Never", "initContainers": [{"name": "side", "image": "i", "restartPolicy": "Always"}], "containers": [{"name": "a", "image": "i"}]}),
                obs: Observed {
                    sandboxes: vec![ready_sandbox()],
                    containers: vec![exited("s1", "side", "sb", 1, 0), running("c1", "a", "sb")],
                },
                unhealthy: &[],
                backoff_on: &[],
                want: PodActions { sandbox_id: "sb".into(), start: vec![Which::Init(0)], ..Default::default() },
            },
        ];
        for case in cases {
            let p = pod(case.spec);
            let mut backoff = Backoff::default();
            for name in case.backoff_on {
                backoff.force(name, Duration::from_secs(10));
            }
            let unhealthy: HashSet<String> = case.unhealthy.iter().map(|s| s.to_string()).collect();
            let started: HashSet<String> = case.obs.running().map(|c| c.id.clone()).collect();
            let ctx = PlanContext { now: 1_000_000_000, backoff: &backoff, unhealthy: &unhealthy, started: &started };
            let got = compute_pod_actions(&p, &case.obs, &ctx);
            assert_eq!(got, case.want, "{}", case.name);
        }
    }
}
