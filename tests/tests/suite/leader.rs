//! The `leader` crate against the real apiserver and etcd: candidates contending for one Lease,
//! with short timings (lease 2 s, renew deadline 1.5 s, retry 0.3 s) so takeovers take seconds.

use std::future::pending;
use std::time::Duration;

use e2e::etcd::Etcd;
use e2e::server::InProcess;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::PostParams;
use leader::{Config, LeaderElector, LostLeadership};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

const NAMESPACE: &str = "kube-system";
const NAME: &str = "test-lock";

fn config(identity: &str) -> Config {
    Config {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(300),
        ..Config::new(NAMESPACE, NAME, identity)
    }
}

fn elector(client: &kube::Client, config: Config) -> LeaderElector {
    LeaderElector::new(client.clone(), config).expect("valid config")
}

/// Acquires, reports `identity` on `leaders`, then renews until leadership is lost.
fn candidate(
    client: &kube::Client,
    identity: &'static str,
    leaders: mpsc::Sender<&'static str>,
) -> JoinHandle<LostLeadership> {
    let mut e = elector(client, config(identity));
    tokio::spawn(async move {
        e.acquire().await;
        let _ = leaders.send(identity).await;
        e.hold().await
    })
}

async fn lease(client: &kube::Client) -> (String, i32) {
    let lease = Api::<Lease>::namespaced(client.clone(), NAMESPACE).get(NAME).await.expect("the Lease");
    let spec = lease.spec.expect("spec");
    (spec.holder_identity.unwrap_or_default(), spec.lease_transitions.unwrap_or(0))
}

#[tokio::test]
async fn one_of_two_candidates_leads_and_the_other_takes_over_when_it_stops_renewing() {
    let etcd = Etcd::start().await;
    let api = InProcess::start(&etcd.endpoint()).await;
    let client = api.endpoint.kube_client().await;
    let (tx, mut leaders) = mpsc::channel(2);
    let a = candidate(&client, "candidate-a", tx.clone());
    let b = candidate(&client, "candidate-b", tx);
    let first = timeout(Duration::from_secs(10), leaders.recv()).await.expect("a leader within 10 s").expect("sent");
    // While the leader renews, the other waits well past the lease duration.
    assert!(timeout(Duration::from_secs(4), leaders.recv()).await.is_err(), "two leaders at once");
    assert_eq!(lease(&client).await, (first.to_string(), 0));

    let (leader, follower, second_expected) =
        if first == "candidate-a" { (a, b, "candidate-b") } else { (b, a, "candidate-a") };
    leader.abort();
    let stopped = Instant::now();
    let second = timeout(Duration::from_secs(10), leaders.recv()).await.expect("a takeover within 10 s").expect("sent");
    let took = stopped.elapsed();
    assert_eq!(second, second_expected);
    // Not before the last renewal (at most one retry period before the abort) expired; not much
    // after it either (the follower notices the expiry within a retry period plus jitter).
    assert!(took >= Duration::from_millis(1500), "took over after {took:?}, before the lease expired");
    assert!(took < Duration::from_secs(5), "took over only after {took:?}");
    assert_eq!(lease(&client).await, (second_expected.to_string(), 1));
    follower.abort();
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once() {
    let etcd = Etcd::start().await;
    let api = InProcess::start(&etcd.endpoint()).await;
    let client = api.endpoint.kube_client().await;
    // A long lease: a takeover within seconds can only come from the release.
    let long = |identity| Config {
        lease_duration: Duration::from_secs(30),
        renew_deadline: Duration::from_secs(10),
        ..config(identity)
    };
    let mut a = elector(&client, long("candidate-a"));
    timeout(Duration::from_secs(10), a.acquire()).await.expect("a leads");
    assert!(a.is_leader());
    let mut b = elector(&client, long("candidate-b"));
    let b = tokio::spawn(async move {
        b.acquire().await;
        b
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!b.is_finished(), "b took a lease a holds");
    let released = Instant::now();
    a.release().await.expect("released");
    assert!(!a.is_leader());
    let b = timeout(Duration::from_secs(3), b).await.expect("b takes the released lease at once").expect("joined");
    assert!(b.is_leader());
    assert!(released.elapsed() < Duration::from_secs(3));
    assert_eq!(lease(&client).await, ("candidate-b".to_string(), 1));
    // a, no longer leading, has nothing to hold.
    assert!(matches!(a.hold().await, LostLeadership::NotLeading { .. }));
}

#[tokio::test]
async fn a_leader_stops_at_once_when_the_lease_names_another_holder() {
    let etcd = Etcd::start().await;
    let api = InProcess::start(&etcd.endpoint()).await;
    let client = api.endpoint.kube_client().await;
    let (tx, mut leading) = mpsc::channel(1);
    let run = tokio::spawn(elector(&client, config("candidate-a")).run(async move {
        let _ = tx.send(()).await;
        pending::<()>().await
    }));
    timeout(Duration::from_secs(10), leading.recv()).await.expect("a leads").expect("sent");
    // Someone writes the Lease over the holder's head (an operator, or a candidate with a clock
    // running fast).
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let mut tries = 0;
    loop {
        let mut l = leases.get(NAME).await.expect("the Lease");
        let spec = l.spec.as_mut().expect("spec");
        spec.holder_identity = Some("intruder".into());
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        match leases.replace(NAME, &PostParams::default(), &l).await {
            Ok(_) => break,
            // The holder renewed between our read and our write.
            Err(kube::Error::Api(s)) if s.is_conflict() && tries < 10 => tries += 1,
            Err(e) => panic!("overwriting the Lease: {e}"),
        }
    }
    let written = Instant::now();
    let lost = timeout(Duration::from_secs(3), run).await.expect("a stops").expect("joined");
    assert_eq!(
        lost,
        Err(LostLeadership::HeldByAnother { lease: format!("{NAMESPACE}/{NAME}"), holder: "intruder".into() })
    );
    // Within a retry period or so, not after the renew deadline.
    assert!(written.elapsed() < Duration::from_millis(1500), "noticed after {:?}", written.elapsed());
}

#[tokio::test]
async fn a_leader_that_cannot_renew_stops_within_the_renew_deadline() {
    let mut etcd = Etcd::start().await;
    let api = InProcess::start(&etcd.endpoint()).await;
    let client = api.endpoint.kube_client().await;
    let mut a = elector(&client, config("candidate-a"));
    timeout(Duration::from_secs(10), a.acquire()).await.expect("a leads");
    etcd.stop();
    let stopped = Instant::now();
    let lost = timeout(Duration::from_secs(10), a.hold()).await.expect("a stops leading");
    assert!(matches!(lost, LostLeadership::RenewDeadlineExceeded { .. }), "{lost:?}");
    // The last renewal started at most a retry period before etcd stopped; leading ends 1.5 s
    // after it, before the 2 s lease others count from it could run out.
    let after = stopped.elapsed();
    assert!(after < Duration::from_secs(2), "stopped leading {after:?} after etcd went away");
    assert!(!a.is_leader());
}
