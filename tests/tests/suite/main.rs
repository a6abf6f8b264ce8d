//! One test binary (so the heavy dependencies link once) holding every integration and
//! end-to-end test. Each test starts its own etcd and apiserver.

mod api;
mod apps_ledger;
mod auth;
mod autoscaling;
mod clients;
mod conformance;
mod controllers;
mod daemonsets;
mod disruption;
mod endpoints_ledger;
mod jobs;
mod kubectl;
mod kubelet;
mod leader;
mod loadbalancer;
mod outage;
mod patching;
mod proxy;
mod sa_tokens;
mod scheduler;
mod services;
mod statefulsets;
