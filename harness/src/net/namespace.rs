//! Moving the harness into a private network namespace.
//!
//! Every node of a Faultline cluster runs on this one machine and talks over
//! loopback. To partition them with iptables without touching the host's own
//! firewall, the harness first moves itself into a fresh network namespace;
//! node processes spawned afterwards inherit it, so every packet between nodes
//! stays inside a network stack that only this test run can see.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// How [`enter_private_network`] obtained the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceMode {
    /// The process was root and only a network namespace was created.
    Root,
    /// The process was not root: a user namespace was created as well, in which
    /// the process is uid 0 and has the capabilities to configure its network
    /// namespace. Files it creates are still owned by the real user on disk.
    Rootless,
}

/// Errors of the network-fault module. Each message names the cause and a fix.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(
        "cannot enter a private network namespace: the process has {threads} threads, but \
         unshare() only moves the calling thread and refuses new user namespaces in \
         multi-threaded processes; call enter_private_network before starting the async \
         runtime or any other thread"
    )]
    MultiThreaded { threads: usize },

    #[error(
        "cannot count this process's threads from /proc/self/status ({source}); is /proc mounted?"
    )]
    ProcStatus { source: io::Error },

    #[error(
        "unshare(CLONE_NEWNET) failed although running as root ({source}); the process lacks \
         CAP_SYS_ADMIN or a seccomp filter forbids unshare (typical in containers); run the \
         container with --cap-add SYS_ADMIN (or --privileged), or run without network nemeses"
    )]
    NetNamespace { source: io::Error },

    #[error(
        "unprivileged user namespaces are unavailable, so a non-root process cannot get its own \
         network namespace (unshare(CLONE_NEWUSER|CLONE_NEWNET): {source}); enable them with \
         `sysctl -w kernel.unprivileged_userns_clone=1` (Debian) and make sure \
         `sysctl user.max_user_namespaces` is not 0, or run as root"
    )]
    UserNamespacesUnavailable { source: io::Error },

    #[error(
        "created a user namespace but could not write {path} ({source}); the kernel or a security \
         module forbids mapping our uid (on Ubuntu 24.04+: `sysctl -w \
         kernel.apparmor_restrict_unprivileged_userns=0`), or run as root. The process is now in \
         an unusable user namespace and should exit"
    )]
    IdMap {
        path: &'static str,
        source: io::Error,
    },

    #[error(
        "could not bring up the loopback interface in the new namespace ({step}: {source}); \
         this needs CAP_NET_ADMIN inside the namespace, which enter_private_network should have \
         granted; report this with the kernel version"
    )]
    Loopback {
        step: &'static str,
        source: io::Error,
    },

    #[error(
        "iptables is not installed; install it with `apt-get install iptables` (or run without \
         network nemeses)"
    )]
    IptablesMissing,

    #[error(
        "cannot slow a link: taking packets from the kernel through NFQUEUE failed ({step}: \
         {source}); the kernel needs netfilter queueing (CONFIG_NETFILTER_NETLINK_QUEUE, module \
         nfnetlink_queue: `modprobe nfnetlink_queue` on the host), and the process CAP_NET_ADMIN \
         in its namespace (call enter_private_network first)"
    )]
    Nfqueue {
        step: &'static str,
        source: io::Error,
    },

    #[error("the thread delaying packets of NFQUEUE queue {queue} failed: {reason}")]
    NfqueueStopped { queue: u16, reason: String },

    #[error(
        "no iptables backend works in this network namespace; tried: {tried}. If the errors say \
         \"Permission denied\", call enter_private_network() first so the process has \
         CAP_NET_ADMIN in its own namespace; if they mention missing tables or modules, load \
         them on the host with `modprobe nf_tables` (or `modprobe ip_tables` for \
         iptables-legacy)"
    )]
    NoIptablesBackend { tried: String },

    #[error("`{command}` failed ({status}): {stderr}")]
    Iptables {
        command: String,
        status: String,
        stderr: String,
    },

    #[error("invalid drop probability {probability}: it must be a number from 0.0 to 1.0")]
    InvalidProbability { probability: f64 },
}

/// Moves the current process into a fresh network namespace and brings `lo` up.
///
/// As root only a network namespace is created. Otherwise a user namespace is
/// created too, mapping the caller's effective uid/gid to 0, which gives the
/// process the capabilities it needs to run iptables in its own namespace.
///
/// Must be called while the process is single-threaded: `unshare` only moves
/// the calling thread (other threads, and anything they spawn, would stay on
/// the host network) and `CLONE_NEWUSER` fails outright with several threads.
/// In practice: call it first thing in `main`, before building the tokio
/// runtime. Child processes spawned afterwards inherit the namespace.
///
/// The new namespace contains only `lo`, so nothing can leave the machine.
pub fn enter_private_network() -> Result<NamespaceMode, NetError> {
    ensure_single_threaded()?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let mode = if unsafe { libc::geteuid() } == 0 {
        unshare(libc::CLONE_NEWNET).map_err(|source| NetError::NetNamespace { source })?;
        NamespaceMode::Root
    } else {
        enter_user_and_network_namespace()?;
        NamespaceMode::Rootless
    };
    bring_loopback_up()?;
    Ok(mode)
}

/// The address node `index` (zero-based: index 0 is the first node, "n1")
/// binds to: `127.0.0.(10 + index + 1)`, so n1 is 127.0.0.11, n2 127.0.0.12...
///
/// On Linux the whole of 127.0.0.0/8 is routed to `lo` (the kernel installs
/// `local 127.0.0.0/8 dev lo`), so nodes can bind these addresses without
/// anyone adding them to an interface. Distinct source addresses are what let
/// iptables tell nodes apart, so nodes must also bind their *outgoing* sockets
/// to their own address: an unbound client gets source 127.0.0.1.
///
/// # Panics
/// If `index >= MAX_NODES` (the address would leave 127.0.0.11..=127.0.0.254).
pub fn node_ip(index: usize) -> Ipv4Addr {
    assert!(
        index < MAX_NODES,
        "node index {index} too large: only {MAX_NODES} nodes fit in 127.0.0.11..=127.0.0.254"
    );
    let last = u8::try_from(10 + index + 1).expect("checked by the assertion above");
    Ipv4Addr::new(127, 0, 0, last)
}

/// Number of nodes [`node_ip`] can address.
pub const MAX_NODES: usize = 244;

fn ensure_single_threaded() -> Result<(), NetError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|source| NetError::ProcStatus { source })?;
    let threads = status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .ok_or_else(|| NetError::ProcStatus {
            source: io::Error::new(io::ErrorKind::InvalidData, "no Threads: line"),
        })?;
    if threads > 1 {
        return Err(NetError::MultiThreaded { threads });
    }
    Ok(())
}

fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare only changes kernel-side attributes of the calling
    // thread; it touches no memory of ours.
    if unsafe { libc::unshare(flags) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn enter_user_and_network_namespace() -> Result<(), NetError> {
    // Read the ids before unsharing: afterwards they read as the overflow id
    // (65534) until the maps are written.
    // SAFETY: geteuid/getegid have no preconditions and cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET)
        .map_err(|source| NetError::UserNamespacesUnavailable { source })?;
    // An unprivileged process may only write gid_map after giving up
    // setgroups(2), otherwise it could drop supplementary groups used in
    // "deny" ACLs. Each map must be written in a single write(2).
    let write = |path: &'static str, contents: String| {
        std::fs::write(path, contents).map_err(|source| NetError::IdMap { path, source })
    };
    write("/proc/self/setgroups", "deny".to_owned())?;
    write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    write("/proc/self/gid_map", format!("0 {gid} 1"))?;
    Ok(())
}

/// A new network namespace starts with `lo` down, so even 127.0.0.1 is
/// unreachable. Setting IFF_UP through the classic interface ioctls avoids
/// depending on the `ip` command.
fn bring_loopback_up() -> Result<(), NetError> {
    // Captures errno, so call it right after the failing call.
    let fail = |step| NetError::Loopback {
        step,
        source: io::Error::last_os_error(),
    };
    // SAFETY: socket() has no memory-safety preconditions; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(fail("socket(AF_INET, SOCK_DGRAM)"));
    }
    // SAFETY: fd is a freshly created descriptor that nothing else owns, so
    // OwnedFd may close it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };

    // SAFETY: ifreq is plain data (a char array and a union of integers,
    // sockaddrs and a pointer); all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated ifr_name and writes
    // ifr_ifru.ifru_flags of `req`, which is valid and exclusively borrowed
    // for the duration of the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(fail("ioctl(SIOCGIFFLAGS, lo)"));
    }
    // SAFETY: the successful SIOCGIFFLAGS above initialised ifru_flags, the
    // union member being read.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS only reads ifr_name and ifru_flags from `req`,
    // which is valid for the duration of the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(fail("ioctl(SIOCSIFFLAGS, lo up)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ips_start_at_eleven() {
        assert_eq!(node_ip(0), Ipv4Addr::new(127, 0, 0, 11));
        assert_eq!(node_ip(1), Ipv4Addr::new(127, 0, 0, 12));
        assert_eq!(node_ip(MAX_NODES - 1), Ipv4Addr::new(127, 0, 0, 254));
    }

    #[test]
    #[should_panic(expected = "too large")]
    fn node_ip_rejects_out_of_range() {
        let _ = node_ip(MAX_NODES);
    }

    #[test]
    fn libtest_process_is_refused_as_multi_threaded() {
        // libtest runs this on a worker thread, so the process has at least
        // two threads; the check must refuse before unshare moves anything.
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let parked = std::thread::spawn(move || wait.recv());
        let result = ensure_single_threaded();
        drop(release);
        let _ = parked.join();
        match result {
            Err(NetError::MultiThreaded { threads }) => assert!(threads >= 2),
            other => panic!("expected MultiThreaded, got {other:?}"),
        }
    }

    #[test]
    fn missing_iptables_message_is_exact() {
        assert_eq!(
            NetError::IptablesMissing.to_string(),
            "iptables is not installed; install it with `apt-get install iptables` \
             (or run without network nemeses)"
        );
    }
}
