//! The only code that runs `iptables`, `iptables-restore` and `iptables-save`.
//!
//! Always the `iptables` on PATH, the one Docker uses (nft backend on these machines); never
//! `iptables-legacy`, which would leave a second set of tables behind. Tables are never flushed
//! whole: Docker's chains live in them too. Everything goes through `iptables-restore --noflush`,
//! which flushes only the chains the text declares.
//!
//! [`Iptables::in_netns`] runs the same commands inside a network namespace, for tests.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::rules::JumpRule;

#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{program} failed: {stderr}")]
    Failed { program: String, stderr: String },
}

/// What a sync needs from iptables: the seam that lets component tests run the proxier against
/// a fake that records what would have been applied.
pub trait Executor: Send + Sync {
    /// `iptables-restore --noflush` of `text`: one transaction.
    fn restore(&self, text: &str) -> impl Future<Output = Result<(), IptablesError>> + Send;
    /// `iptables-save -t TABLE`.
    fn save(&self, table: &str) -> impl Future<Output = Result<String, IptablesError>> + Send;
    /// Makes sure each jump exists; missing ones are inserted at the top, in list order.
    fn ensure_jumps(&self, jumps: &[JumpRule]) -> impl Future<Output = Result<(), IptablesError>> + Send;
}

impl Executor for Iptables {
    async fn restore(&self, text: &str) -> Result<(), IptablesError> {
        Iptables::restore(self, text).await
    }

    async fn save(&self, table: &str) -> Result<String, IptablesError> {
        Iptables::save(self, table).await
    }

    async fn ensure_jumps(&self, jumps: &[JumpRule]) -> Result<(), IptablesError> {
        Iptables::ensure_jumps(self, jumps).await
    }
}

/// Runs the iptables tools on the host, or inside a network namespace.
#[derive(Debug, Clone, Default)]
pub struct Iptables {
    /// Prepended to every command (`ip netns exec NAME`), empty on the host.
    prefix: Vec<String>,
}

impl Iptables {
    /// The host's tables.
    pub fn host() -> Iptables {
        Iptables::default()
    }

    /// The tables of network namespace `name` (made with `ip netns add`).
    pub fn in_netns(name: &str) -> Iptables {
        Iptables { prefix: ["ip", "netns", "exec", name].map(String::from).to_vec() }
    }

    fn command(&self, program: &str, args: &[&str]) -> tokio::process::Command {
        let mut c = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = tokio::process::Command::new(first);
                c.args(rest).arg(program);
                c
            }
            None => tokio::process::Command::new(program),
        };
        c.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        c
    }

    async fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, IptablesError> {
        let mut cmd = self.command(program, args);
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let spawn = |source| IptablesError::Spawn { program: program.to_string(), source };
        let mut child = cmd.spawn().map_err(spawn)?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).await.map_err(spawn)?;
            drop(pipe);
        }
        let out = child.wait_with_output().await.map_err(spawn)?;
        if !out.status.success() {
            return Err(IptablesError::Failed {
                program: format!("{program} {}", args.join(" ")),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `iptables-restore --noflush` of `text`: one transaction.
    pub async fn restore(&self, text: &str) -> Result<(), IptablesError> {
        self.run("iptables-restore", &["--noflush"], Some(text)).await.map(drop)
    }

    /// `iptables-save -t TABLE`.
    pub async fn save(&self, table: &str) -> Result<String, IptablesError> {
        self.run("iptables-save", &["-t", table], None).await
    }

    /// Whether `chain` exists in the filter table (Docker's DOCKER-USER, say).
    pub async fn has_chain(&self, chain: &str) -> bool {
        self.run("iptables", &["-w", "-t", "filter", "-S", chain], None).await.is_ok()
    }

    /// Makes sure each jump exists; missing ones are inserted at the top, in list order.
    pub async fn ensure_jumps(&self, jumps: &[JumpRule]) -> Result<(), IptablesError> {
        for jump in jumps.iter().rev() {
            let args: Vec<&str> = jump.args.iter().map(String::as_str).collect();
            let mut check = vec!["-w", "-t", jump.table, "-C", jump.chain];
            check.extend(&args);
            if self.run("iptables", &check, None).await.is_ok() {
                continue;
            }
            let mut insert = vec!["-w", "-t", jump.table, "-I", jump.chain, "1"];
            insert.extend(&args);
            self.run("iptables", &insert, None).await?;
            tracing::info!(table = jump.table, chain = jump.chain, rule = %jump.args.join(" "), "Inserted jump rule");
        }
        Ok(())
    }

    /// Removes every KUBE-* chain of the nat and filter tables and every rule elsewhere that
    /// jumps to one: what `kube-proxy --cleanup` does. One restore per table.
    pub async fn cleanup(&self) -> Result<usize, IptablesError> {
        let mut removed = 0;
        for table in ["nat", "filter"] {
            let saved = self.save(table).await?;
            if let Some((text, chains)) = cleanup_text(table, &saved) {
                self.restore(&text).await?;
                removed += chains;
            }
        }
        Ok(removed)
    }
}

/// The chain names an `iptables-save` output declares (`:NAME POLICY [counters]` lines).
pub fn chain_names(saved: &str) -> Vec<String> {
    saved.lines().filter_map(|l| l.strip_prefix(':')).filter_map(|l| l.split(' ').next()).map(String::from).collect()
}

fn is_ours(chain: &str) -> bool {
    chain.starts_with("KUBE-")
}

/// Restore input that deletes the jumps into KUBE-* chains from other chains, then flushes and
/// deletes the KUBE-* chains of `table`, with how many chains that is; `None` if there are none.
pub fn cleanup_text(table: &str, saved: &str) -> Option<(String, usize)> {
    let chains: Vec<String> = chain_names(saved).into_iter().filter(|c| is_ours(c)).collect();
    let jumps: Vec<String> = saved
        .lines()
        .filter_map(|l| l.strip_prefix("-A "))
        .filter(|rule| rule.split(' ').next().is_some_and(|chain| !is_ours(chain)))
        .filter(|rule| {
            let words: Vec<&str> = rule.split(' ').collect();
            words.windows(2).any(|w| matches!(w[0], "-j" | "-g") && is_ours(w[1]))
        })
        .map(|rule| format!("-D {rule}"))
        .collect();
    if chains.is_empty() && jumps.is_empty() {
        return None;
    }
    let mut text = format!("*{table}\n");
    for j in &jumps {
        text.push_str(j);
        text.push('\n');
    }
    for c in &chains {
        text.push_str(&format!(":{c} - [0:0]\n"));
    }
    for c in &chains {
        text.push_str(&format!("-X {c}\n"));
    }
    text.push_str("COMMIT\n");
    Some((text, chains.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVED: &str = "\
# Generated by iptables-save v1.8.9 (nf_tables)
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-ABC - [0:0]
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.96.0.10/32 -j KUBE-SVC-ABC
COMMIT
";

    #[test]
    fn cleanup_deletes_our_jumps_then_our_chains_and_leaves_dockers_alone() {
        let (text, n) = cleanup_text("nat", SAVED).expect("something to do");
        assert_eq!(n, 2);
        assert_eq!(
            text,
            "*nat\n\
             -D PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -D OUTPUT -j KUBE-SERVICES\n\
             :KUBE-SERVICES - [0:0]\n\
             :KUBE-SVC-ABC - [0:0]\n\
             -X KUBE-SERVICES\n\
             -X KUBE-SVC-ABC\n\
             COMMIT\n"
        );
    }

    #[test]
    fn cleanup_of_a_clean_table_does_nothing() {
        assert_eq!(cleanup_text("filter", "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j DOCKER\nCOMMIT\n"), None);
    }

    #[test]
    fn chain_names_are_read_from_declarations() {
        assert_eq!(chain_names(SAVED), ["PREROUTING", "OUTPUT", "DOCKER", "KUBE-SERVICES", "KUBE-SVC-ABC"]);
    }
}
