//! The only code that runs `iptables`, `iptables-restore` and `iptables-save`.
//!
//! Always the `iptables` on PATH, the one Docker uses (nft backend on these machines); never
//! the legacy backend's tools, which would leave a second set of tables behind. Tables are never flushed
//! whole: Docker's chains live in them too. Everything goes through `iptables-restore --noflush`,
//! which flushes only the chains the text declares.
//!
//! [`Iptables::in_netns`] runs the same commands inside a network namespace, for tests.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
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
    /// Whether the nat table has `chain` (when unsure, say yes: the caller then saves the table).
    fn has_nat_chain(&self, _chain: &str) -> impl Future<Output = bool> + Send {
        async { true }
    }
    /// The jumps not in place, found by listing their chains; `None` when that cannot be told
    /// (the caller then ensures them one by one).
    fn missing_jumps(&self, _jumps: &[JumpRule]) -> impl Future<Output = Option<Vec<JumpRule>>> + Send {
        async { None }
    }
}

/// `jumps` as `iptables-restore` lines inserting each at the top of its chain, so that after
/// them the chain starts with the jumps in list order; grouped by table.
pub fn insert_lines(jumps: &[JumpRule], table: &str) -> String {
    let mut out = String::new();
    for j in jumps.iter().rev().filter(|j| j.table == table) {
        out.push_str("-I ");
        out.push_str(j.chain);
        out.push_str(" 1");
        for a in &j.args {
            out.push(' ');
            if a.contains(' ') || a.is_empty() {
                out.push('"');
                out.push_str(a);
                out.push('"');
            } else {
                out.push_str(a);
            }
        }
        out.push('\n');
    }
    out
}

/// `text` (a restore input of `*table ... COMMIT` sections) with `jumps` inserted before each
/// table's COMMIT.
pub fn with_jumps(text: &str, jumps: &[JumpRule]) -> String {
    if jumps.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 1024);
    let mut table = "";
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = if t == "nat" {
                "nat"
            } else if t == "filter" {
                "filter"
            } else {
                ""
            };
        }
        if line == "COMMIT" && !table.is_empty() {
            out.push_str(&insert_lines(jumps, table));
        }
        out.push_str(line);
        out.push('\n');
    }
    out
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

    async fn has_nat_chain(&self, chain: &str) -> bool {
        self.run("iptables", &["-w", "-t", "nat", "-S", chain], None).await.is_ok()
    }

    async fn missing_jumps(&self, jumps: &[JumpRule]) -> Option<Vec<JumpRule>> {
        let listed = self.list_jump_chains(jumps).await;
        // A built-in chain that cannot be listed: let the caller fall back.
        if listed.values().any(Option::is_none) {
            return None;
        }
        Some(jumps.iter().filter(|j| !jump_listed(&listed, j)).cloned().collect())
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

    /// Makes sure each jump exists; missing ones are inserted at the top, in list order. One
    /// `iptables -S CHAIN` per built-in chain finds those present (a whole-table save would list
    /// every Service rule too); only the others cost an `iptables -C` (whose exact match
    /// decides) and an insert.
    pub async fn ensure_jumps(&self, jumps: &[JumpRule]) -> Result<(), IptablesError> {
        let listed = self.list_jump_chains(jumps).await;
        for jump in jumps.iter().rev() {
            if jump_listed(&listed, jump) {
                continue;
            }
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

    /// `iptables -S` of each built-in chain the jumps start from (`None` where it failed).
    async fn list_jump_chains<'a>(&self, jumps: &'a [JumpRule]) -> HashMap<(&'a str, &'a str), Option<String>> {
        let mut listed = HashMap::new();
        for jump in jumps {
            if let Entry::Vacant(e) = listed.entry((jump.table, jump.chain)) {
                e.insert(self.run("iptables", &["-w", "-t", jump.table, "-S", jump.chain], None).await.ok());
            }
        }
        listed
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

fn jump_listed(listed: &HashMap<(&str, &str), Option<String>>, jump: &JumpRule) -> bool {
    listed.get(&(jump.table, jump.chain)).and_then(Option::as_deref).is_some_and(|s| jump_present(s, jump))
}

/// Whether `saved` (one table's `iptables-save`) has `jump`: a rule in its chain whose words,
/// with the comment's quotes taken off, are the jump's arguments in order.
pub fn jump_present(saved: &str, jump: &JumpRule) -> bool {
    let prefix = format!("-A {} ", jump.chain);
    saved.lines().filter_map(|l| l.strip_prefix(&prefix)).any(|rest| {
        let mut words: Vec<String> = Vec::new();
        let mut quoted: Option<String> = None;
        for w in rest.split(' ') {
            match quoted.as_mut() {
                Some(q) => {
                    q.push(' ');
                    q.push_str(w.trim_end_matches('"'));
                    if w.ends_with('"') {
                        words.extend(quoted.take());
                    }
                }
                None if w.starts_with('"') && !(w.len() > 1 && w.ends_with('"')) => {
                    quoted = Some(w.trim_start_matches('"').to_string());
                }
                None => words.push(w.trim_matches('"').to_string()),
            }
        }
        words == jump.args
    })
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

    #[test]
    fn missing_jumps_go_into_the_restore_before_their_tables_commit_in_list_order() {
        let j = |table: &'static str, chain: &'static str, comment: &str, target: &str| JumpRule {
            table,
            chain,
            args: ["-m", "comment", "--comment", comment, "-j", target].map(String::from).to_vec(),
        };
        let jumps = [
            j("filter", "INPUT", "first one", "KUBE-A"),
            j("filter", "INPUT", "second", "KUBE-B"),
            j("nat", "OUTPUT", "kubernetes service portals", "KUBE-SERVICES"),
        ];
        let text = "*filter\n:KUBE-A - [0:0]\nCOMMIT\n*nat\n:KUBE-SERVICES - [0:0]\nCOMMIT\n";
        assert_eq!(
            with_jumps(text, &jumps),
            "*filter\n:KUBE-A - [0:0]\n-I INPUT 1 -m comment --comment second -j KUBE-B\n\
             -I INPUT 1 -m comment --comment \"first one\" -j KUBE-A\nCOMMIT\n\
             *nat\n:KUBE-SERVICES - [0:0]\n-I OUTPUT 1 -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\nCOMMIT\n"
        );
        assert_eq!(with_jumps(text, &[]), text);
    }

    #[test]
    fn a_saved_jump_is_found_by_its_words_with_the_comment_unquoted() {
        let saved = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n-A INPUT -j KUBE-FIREWALL\nCOMMIT\n";
        let jump = |chain: &'static str, args: &[&str]| crate::rules::JumpRule {
            table: "filter",
            chain,
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        let fw = [
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-m",
            "comment",
            "--comment",
            "kubernetes load balancer firewall",
            "-j",
            "KUBE-PROXY-FIREWALL",
        ];
        assert!(jump_present(saved, &jump("INPUT", &fw)));
        assert!(jump_present(saved, &jump("INPUT", &["-j", "KUBE-FIREWALL"])));
        assert!(!jump_present(saved, &jump("OUTPUT", &["-j", "KUBE-FIREWALL"])), "another chain");
        assert!(!jump_present(saved, &jump("INPUT", &fw[4..])), "other words");
    }

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
