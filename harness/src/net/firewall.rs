//! Dropping packets between nodes with iptables, inside the private namespace.
//!
//! All fault rules live in one chain, [`CHAIN`], so healing the network is a
//! single flush and the host's rules (in another namespace anyway) are never
//! edited rule by rule.
//!
//! Where packets are judged: a packet from 127.0.0.11 to 127.0.0.12 traverses
//! OUTPUT, then `lo`, then INPUT, with the same source and destination both
//! times. If both hooks jumped to the chain, a `lossy_link` rule would be
//! rolled twice (p = 0.5 would drop 75%). And a DROP in OUTPUT is not silent:
//! the kernel fails the sender's `send` with EPERM, which a real network never
//! does. So loopback packets are judged only in INPUT (the sender sees a
//! successful send, the packet just never arrives), and the OUTPUT hook skips
//! `lo` and covers only traffic leaving through other interfaces, if a later
//! setup adds any. Every packet is therefore judged exactly once.
//!
//! The rules match every packet, not only NEW connections, so established TCP
//! connections stop passing data too (and resume, via retransmission, after
//! [`Firewall::heal`]).

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::namespace::NetError;

/// Name of the chain holding every fault rule.
pub const CHAIN: &str = "FAULTLINE";

/// Handle on the iptables rules of the current network namespace.
///
/// Create it after [`enter_private_network`](super::namespace::enter_private_network):
/// it edits whatever namespace the process is in. Methods run the iptables
/// command synchronously (a few milliseconds each); call them from a blocking
/// context when inside an async runtime.
#[derive(Debug, Clone)]
pub struct Firewall {
    iptables: PathBuf,
    /// `<backend>-restore`, used to add many rules in one invocation.
    restore: Option<PathBuf>,
    /// Replacement xtables lock file, if the default one is unusable.
    lock_file: Option<PathBuf>,
}

impl Firewall {
    /// Finds a working iptables backend and installs the [`CHAIN`] chain,
    /// hooked from INPUT and OUTPUT. Idempotent: an existing chain is flushed.
    pub fn new() -> Result<Firewall, NetError> {
        let found = find_iptables().ok_or(NetError::IptablesMissing)?;
        let dir = found.parent().unwrap_or(Path::new("/"));
        let lock_file = xtables_lock_file();

        // `iptables` is whatever the distribution's alternatives point at; the
        // explicit backends are fallbacks for when that one cannot work here
        // (e.g. nf_tables missing from the kernel, or a legacy-only setup).
        let mut tried = Vec::new();
        for name in ["iptables", "iptables-nft", "iptables-legacy"] {
            let path = if name == "iptables" {
                found.clone()
            } else {
                dir.join(name)
            };
            if !is_executable(&path) {
                continue;
            }
            let restore = dir.join(format!("{name}-restore"));
            let candidate = Firewall {
                restore: is_executable(&restore).then_some(restore),
                iptables: path,
                lock_file: lock_file.clone(),
            };
            match candidate.run(&["-L", "-n"]) {
                Ok(_) => {
                    candidate.install_chain()?;
                    return Ok(candidate);
                }
                Err(err) => tried.push(err.to_string()),
            }
        }
        Err(NetError::NoIptablesBackend {
            tried: tried.join("; "),
        })
    }

    /// The iptables binary in use (e.g. `/usr/sbin/iptables-nft`).
    pub fn backend(&self) -> &Path {
        &self.iptables
    }

    /// Drops every packet sent from `from` to `to` (one direction only).
    ///
    /// Note that TCP needs both directions: a one-way drop also stops new
    /// connections from `to` to `from`, whose handshake replies are dropped.
    pub fn drop_link(&self, from: Ipv4Addr, to: Ipv4Addr) -> Result<(), NetError> {
        self.link_rule("-A", from, to, &["-j", "DROP"])
    }

    /// Drops every packet on each `(from, to)` link, in a single
    /// `iptables-restore --noflush` call when available (one process and one
    /// ruleset commit however large the grudge), else one call per link.
    /// Rules are appended to those already present.
    pub fn drop_links(&self, links: &[(Ipv4Addr, Ipv4Addr)]) -> Result<(), NetError> {
        match (&self.restore, links) {
            (_, []) => Ok(()),
            (None, _) | (_, [_]) => links
                .iter()
                .try_for_each(|&(from, to)| self.drop_link(from, to)),
            (Some(restore), _) => {
                let mut script = String::from("*filter\n");
                for &(from, to) in links {
                    let (from, to) = (host(from), host(to));
                    writeln!(script, "-A {CHAIN} -s {from} -d {to} -j DROP")
                        .expect("writing to a String cannot fail");
                }
                script.push_str("COMMIT\n");
                self.restore(restore, &script)
            }
        }
    }

    /// Drops each packet sent from `from` to `to` with the given probability,
    /// independently (iptables `statistic` match).
    pub fn lossy_link(
        &self,
        from: Ipv4Addr,
        to: Ipv4Addr,
        probability: f64,
    ) -> Result<(), NetError> {
        if !(0.0..=1.0).contains(&probability) {
            return Err(NetError::InvalidProbability { probability });
        }
        // f64's Display never uses exponent notation, which iptables rejects.
        let p = probability.to_string();
        self.link_rule(
            "-A",
            from,
            to,
            &[
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &p,
                "-j",
                "DROP",
            ],
        )
    }

    /// Hands every packet sent from `from` to `to` to NFQUEUE queue `queue_num`, where a
    /// [`LinkDelay`](super::delay::LinkDelay) holds it back. Without one bound to the queue,
    /// packets pass (`--queue-bypass`).
    pub fn delay_link(&self, from: Ipv4Addr, to: Ipv4Addr, queue_num: u16) -> Result<(), NetError> {
        let queue = queue_num.to_string();
        self.link_rule(
            "-A",
            from,
            to,
            &["-j", "NFQUEUE", "--queue-num", &queue, "--queue-bypass"],
        )
    }

    /// Removes the rules [`drop_links`](Self::drop_links) added for each `(from, to)`, and
    /// only those: other faults stay in force.
    pub fn undrop_links(&self, links: &[(Ipv4Addr, Ipv4Addr)]) -> Result<(), NetError> {
        links
            .iter()
            .try_for_each(|&(from, to)| self.link_rule("-D", from, to, &["-j", "DROP"]))
    }

    /// Removes every fault rule: one flush of [`CHAIN`].
    pub fn heal(&self) -> Result<(), NetError> {
        self.run(&["-F", CHAIN]).map(drop)
    }

    /// The current fault rules with packet counters, for logs.
    pub fn rules(&self) -> Result<String, NetError> {
        self.run(&["-L", CHAIN, "-n", "-v", "-x"])
    }

    /// Adds (`-A`) or deletes (`-D`) the rule in [`CHAIN`] that matches packets from `from`
    /// to `to` and then applies `rest` (further matches and the target).
    fn link_rule(
        &self,
        action: &str,
        from: Ipv4Addr,
        to: Ipv4Addr,
        rest: &[&str],
    ) -> Result<(), NetError> {
        let (from, to) = (host(from), host(to));
        let rule = [action, CHAIN, "-s", &from, "-d", &to];
        self.run(&[&rule[..], rest].concat()).map(drop)
    }

    fn install_chain(&self) -> Result<(), NetError> {
        if self.run(&["-L", CHAIN, "-n"]).is_ok() {
            self.heal()?;
        } else {
            self.run(&["-N", CHAIN])?;
        }
        // See the module documentation for why OUTPUT skips `lo`.
        let hooks: [&[&str]; 2] = [
            &["INPUT", "-j", CHAIN],
            &["OUTPUT", "!", "-o", "lo", "-j", CHAIN],
        ];
        for hook in hooks {
            // -C fails when the rule is absent; insert it first in the chain
            // so no earlier ACCEPT can bypass the faults.
            if self.run(&[&["-C"], hook].concat()).is_err() {
                let (chain, rule) = hook.split_first().expect("hooks are non-empty");
                self.run(&[&["-I", chain, "1"], rule].concat())?;
            }
        }
        Ok(())
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        if let Some(lock_file) = &self.lock_file {
            cmd.env("XTABLES_LOCKFILE", lock_file);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    }

    fn run(&self, args: &[&str]) -> Result<String, NetError> {
        // -w: wait for the xtables lock instead of failing if another
        // iptables in this namespace holds it.
        let mut cmd = self.command(&self.iptables);
        cmd.arg("-w").args(args).stdin(Stdio::null());
        let describe = || command_line(&self.iptables, &[&["-w"], args].concat());
        let output = cmd.output().map_err(|e| spawn_error(describe(), &e))?;
        check(describe, output)
    }

    fn restore(&self, restore: &Path, script: &str) -> Result<(), NetError> {
        let args = ["-w", "--noflush"];
        // The script is part of the description because iptables-restore
        // reports failures only as "Error occurred at line: N".
        let describe = || format!("{} <<EOF\n{script}EOF", command_line(restore, &args));
        let mut child = self
            .command(restore)
            .args(args)
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_error(describe(), &e))?;
        let mut stdin = child.stdin.take().expect("stdin was piped");
        // A write error means iptables-restore exited early; its stderr,
        // collected below, says why, so only report the write error if
        // iptables-restore claims success.
        let written = stdin.write_all(script.as_bytes());
        drop(stdin);
        let output = child
            .wait_with_output()
            .map_err(|e| spawn_error(describe(), &e))?;
        check(describe, output)?;
        written.map_err(|e| spawn_error(describe(), &e))
    }
}

fn host(ip: Ipv4Addr) -> String {
    format!("{ip}/32")
}

fn command_line(program: &Path, args: &[&str]) -> String {
    let mut line = program.display().to_string();
    for arg in args {
        line.push(' ');
        line.push_str(arg);
    }
    line
}

fn spawn_error(command: String, err: &std::io::Error) -> NetError {
    NetError::Iptables {
        command,
        status: "could not run it".to_owned(),
        stderr: err.to_string(),
    }
}

fn check(describe: impl FnOnce() -> String, output: Output) -> Result<String, NetError> {
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(NetError::Iptables {
        command: describe(),
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

/// iptables-legacy serialises callers with a lock on /run/xtables.lock,
/// which a rootless process cannot open. Then use a private lock file: it
/// only has to cover this namespace, whose rules only this process family
/// edits. The pid keeps it from colliding with another user's file for a
/// namespace whose inode number was reused. iptables-nft ignores the lock.
fn xtables_lock_file() -> Option<PathBuf> {
    const DEFAULT: &str = "/run/xtables.lock";
    let usable = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(DEFAULT)
        .is_ok();
    if usable {
        return None;
    }
    let ns = std::fs::metadata("/proc/self/ns/net").map_or(0, |m| m.ino());
    let pid = std::process::id();
    Some(std::env::temp_dir().join(format!("faultline-xtables-{pid}-{ns}.lock")))
}

fn find_iptables() -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    // The sbin directories are often missing from a normal user's PATH.
    path_dirs
        .into_iter()
        .map(|dir| dir.join("iptables"))
        .chain(["/usr/sbin/iptables", "/sbin/iptables"].map(PathBuf::from))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_names_command_and_stderr() {
        let fw = Firewall {
            iptables: PathBuf::from("/bin/sh"),
            restore: None,
            lock_file: None,
        };
        // `sh -w` is an invalid option: exercises the failure path without iptables.
        let err = fw.run(&["-L", CHAIN]).unwrap_err().to_string();
        assert!(
            err.starts_with("`/bin/sh -w -L FAULTLINE` failed (exit status: 2)"),
            "{err}"
        );
        assert!(err.contains("-w"), "stderr missing: {err}");
    }

    #[test]
    fn probability_is_validated_before_running_anything() {
        let fw = Firewall {
            iptables: PathBuf::from("/nonexistent/iptables"),
            restore: None,
            lock_file: None,
        };
        let any = Ipv4Addr::LOCALHOST;
        for p in [-0.1, 1.5, f64::NAN] {
            assert!(matches!(
                fw.lossy_link(any, any, p),
                Err(NetError::InvalidProbability { .. })
            ));
        }
    }
}
