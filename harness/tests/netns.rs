//! Real network-namespace and iptables tests.
//!
//! `enter_private_network` must run in a single-threaded process, and it moves
//! the whole process for good, so every case runs in a fresh child: this
//! binary re-executes itself with `FAULTLINE_NETNS_CHILD=<case>`, and the
//! child runs the case from `main` before any other thread exists. That is
//! why this target uses `harness = false`: libtest would already have started
//! its worker threads.
//!
//! Exit codes of a child: 0 passed, 77 skipped (reason printed), else failed.
//! Skips happen only when the environment cannot run the case (not root and
//! no user namespaces, or no iptables), never to hide a failure.
//!
//! Run with `cargo test --test netns [-- FILTER]`.

use std::io::{self, Read, Write};
use std::mem::size_of;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use faultline_harness::net::delay::LinkDelay;
use faultline_harness::net::firewall::Firewall;
use faultline_harness::net::namespace::{NamespaceMode, NetError, enter_private_network, node_ip};
use faultline_harness::net::shapes::isolate_one;

const CHILD_ENV: &str = "FAULTLINE_NETNS_CHILD";
const SKIPPED: i32 = 77;
/// Long enough for loopback (microseconds) by orders of magnitude; a
/// blocked connection must fail, whatever the exact time it takes.
const BLOCKED_TIMEOUT: Duration = Duration::from_millis(300);
const WORKS_TIMEOUT: Duration = Duration::from_secs(2);
const UNPRIVILEGED: u32 = 65534;

struct Case {
    name: &'static str,
    run: fn(),
    /// Run the child as uid/gid 65534 when the parent is root.
    unprivileged: bool,
}

const CASES: &[Case] = &[
    Case {
        name: "one_way_drop_link_and_heal",
        run: one_way_drop_link_and_heal,
        unprivileged: false,
    },
    Case {
        name: "drop_links_applies_a_grudge",
        run: drop_links_applies_a_grudge,
        unprivileged: false,
    },
    Case {
        name: "established_connection_is_cut_then_resumes",
        run: established_connection_is_cut_then_resumes,
        unprivileged: false,
    },
    Case {
        name: "lossy_link_drops_about_the_given_fraction_once",
        run: lossy_link_drops_about_the_given_fraction_once,
        unprivileged: false,
    },
    Case {
        name: "delay_link_holds_packets_and_keeps_their_order",
        run: delay_link_holds_packets_and_keeps_their_order,
        unprivileged: false,
    },
    Case {
        name: "undrop_links_lifts_only_the_named_links",
        run: undrop_links_lifts_only_the_named_links,
        unprivileged: false,
    },
    Case {
        name: "children_inherit_the_namespace",
        run: children_inherit_the_namespace,
        unprivileged: false,
    },
    Case {
        name: "refuses_when_multi_threaded",
        run: refuses_when_multi_threaded,
        unprivileged: false,
    },
    Case {
        name: "rootless_one_way_drop_link_and_heal",
        run: one_way_drop_link_and_heal,
        unprivileged: true,
    },
];

fn main() {
    if let Ok(name) = std::env::var(CHILD_ENV) {
        let case = CASES.iter().find(|c| c.name == name).expect("unknown case");
        (case.run)();
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        CASES.iter().for_each(|c| println!("{}: test", c.name));
        return;
    }
    let filter = args.iter().find(|a| !a.starts_with('-'));
    let selected: Vec<&Case> = CASES
        .iter()
        .filter(|c| filter.is_none_or(|f| c.name.contains(f.as_str())))
        .collect();

    println!(
        "\nrunning {} namespace tests (each in its own child process)",
        selected.len()
    );
    let (mut failed, mut skipped) = (Vec::new(), Vec::new());
    for case in &selected {
        println!("test {} ...", case.name);
        let status = run_child(case);
        match status.code() {
            Some(0) => println!("test {} ... ok", case.name),
            Some(SKIPPED) => {
                println!("test {} ... SKIPPED (see reason above)", case.name);
                skipped.push(case.name);
            }
            _ => {
                println!("test {} ... FAILED ({status})", case.name);
                failed.push(case.name);
            }
        }
    }
    let passed = selected.len() - failed.len() - skipped.len();
    println!(
        "\nnamespace tests: {passed} passed; {} failed; {} skipped",
        failed.len(),
        skipped.len()
    );
    if !skipped.is_empty() {
        println!(
            "!!! WARNING: {} namespace tests were SKIPPED, NOT RUN: {skipped:?}",
            skipped.len()
        );
    }
    if !failed.is_empty() {
        println!("failed: {failed:?}");
        std::process::exit(1);
    }
}

fn run_child(case: &Case) -> ExitStatus {
    let exe = std::env::current_exe().expect("current_exe");
    let as_nobody = case.unprivileged && is_root();
    // The unprivileged child must be able to execute the binary, which may
    // sit in a directory only root can enter, so run a world-readable copy.
    let copy_dir = as_nobody.then(|| world_readable_copy(&exe));
    let mut cmd = match &copy_dir {
        Some(dir) => {
            let mut cmd = Command::new(dir.join("netns-test"));
            // std also clears supplementary groups when root sets a uid.
            cmd.uid(UNPRIVILEGED).gid(UNPRIVILEGED).current_dir("/");
            cmd
        }
        None => Command::new(&exe),
    };
    let status = cmd
        .env(CHILD_ENV, case.name)
        .status()
        .expect("spawn test child");
    if let Some(dir) = copy_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    status
}

fn world_readable_copy(exe: &std::path::Path) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("faultline-netns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let copy = dir.join("netns-test");
    std::fs::copy(exe, &copy).expect("copy test binary");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod exe");
    dir
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn skip(reason: &str) -> ! {
    println!("!!! SKIPPED: {reason}");
    std::process::exit(SKIPPED);
}

/// Enters the namespace, checks it is new and in the expected mode, and
/// returns a firewall for it. Skips only for missing environment support.
fn setup() -> Firewall {
    let was_root = is_root();
    let before = std::fs::read_link("/proc/self/ns/net").expect("read netns");
    let mode = match enter_private_network() {
        Ok(mode) => mode,
        Err(e @ (NetError::UserNamespacesUnavailable { .. } | NetError::IdMap { .. }))
            if !was_root =>
        {
            skip(&format!("not root and user namespaces unavailable: {e}"))
        }
        Err(e) => panic!("enter_private_network: {e}"),
    };
    let expected = if was_root {
        NamespaceMode::Root
    } else {
        NamespaceMode::Rootless
    };
    assert_eq!(mode, expected);
    let after = std::fs::read_link("/proc/self/ns/net").expect("read netns");
    assert_ne!(before, after, "still in the original network namespace");
    let fw = match Firewall::new() {
        Ok(fw) => fw,
        Err(e @ NetError::IptablesMissing) => skip(&e.to_string()),
        Err(e) => panic!("Firewall::new: {e}"),
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    println!(
        "    {mode:?} (uid {uid} in namespace {after:?}), backend {}",
        fw.backend().display()
    );
    fw
}

/// Echo server on `ip`, serving each connection on its own thread.
fn echo_server(ip: Ipv4Addr) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).expect("bind listener");
    let addr = listener.local_addr().expect("local_addr");
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0; 1024];
                while let Ok(n @ 1..) = conn.read(&mut buf) {
                    if conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Connects to `dst` from `src` (std cannot bind before connecting, and
/// without the bind the source would be 127.0.0.1, which no rule matches).
fn connect_from(src: Ipv4Addr, dst: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let SocketAddr::V4(dst) = dst else {
        panic!("IPv4 only")
    };
    let flags = libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    // SAFETY: socket() has no memory-safety preconditions; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, flags, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let local = sockaddr(SocketAddrV4::new(src, 0));
    // SAFETY: `local` is a valid sockaddr_in of `len` bytes for the call.
    if unsafe { libc::bind(fd.as_raw_fd(), (&raw const local).cast(), len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let remote = sockaddr(dst);
    // SAFETY: `remote` is a valid sockaddr_in of `len` bytes for the call.
    if unsafe { libc::connect(fd.as_raw_fd(), (&raw const remote).cast(), len) } < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(err);
        }
    }
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).expect("timeout fits");
    // SAFETY: `pfd` is one valid pollfd, matching the count of 1.
    match unsafe { libc::poll(&mut pfd, 1, ms) } {
        0 => return Err(io::ErrorKind::TimedOut.into()),
        n if n < 0 => return Err(io::Error::last_os_error()),
        _ => {}
    }
    let stream = TcpStream::from(fd);
    if let Some(err) = stream.take_error()? {
        return Err(err);
    }
    stream.set_nonblocking(false)?;
    Ok(stream)
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

fn assert_tcp_works(src: Ipv4Addr, dst: SocketAddr) {
    let mut conn = connect_from(src, dst, WORKS_TIMEOUT)
        .unwrap_or_else(|e| panic!("{src} -> {dst} should connect: {e}"));
    conn.set_read_timeout(Some(WORKS_TIMEOUT)).unwrap();
    conn.write_all(b"ping").unwrap();
    let mut buf = [0; 4];
    conn.read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("{src} -> {dst} echo: {e}"));
    assert_eq!(&buf, b"ping");
}

fn assert_tcp_blocked(src: Ipv4Addr, dst: SocketAddr) {
    match connect_from(src, dst, BLOCKED_TIMEOUT) {
        // A refusal would mean the packet arrived; only silence is a drop.
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
        other => panic!("{src} -> {dst} should time out, got {other:?}"),
    }
}

/// Sends one datagram from `src` to `dst`; returns whether it arrived.
fn udp_delivered(src: Ipv4Addr, dst: Ipv4Addr) -> bool {
    let rx = UdpSocket::bind((dst, 0)).unwrap();
    rx.set_read_timeout(Some(BLOCKED_TIMEOUT)).unwrap();
    let tx = UdpSocket::bind((src, 0)).unwrap();
    // Must succeed even when dropped: a real network does not tell the
    // sender (an OUTPUT-chain DROP would fail this with EPERM).
    tx.send_to(b"x", rx.local_addr().unwrap())
        .expect("send must not see the drop");
    rx.recv(&mut [0; 8]).is_ok()
}

fn delay_link_holds_packets_and_keeps_their_order() {
    let fw = setup();
    let (n1, n2, n3) = (node_ip(0), node_ip(1), node_ip(2));
    let delay = LinkDelay::start(0, Duration::from_millis(300)).expect("start the delay");
    fw.delay_link(n1, n2, 0).unwrap();
    let rx = UdpSocket::bind((n2, 0)).unwrap();
    rx.set_read_timeout(Some(WORKS_TIMEOUT)).unwrap();
    let slow = UdpSocket::bind((n1, 0)).unwrap();
    let fast = UdpSocket::bind((n3, 0)).unwrap();
    let to = rx.local_addr().unwrap();
    slow.send_to(b"slow-1", to).unwrap();
    slow.send_to(b"slow-2", to).unwrap();
    fast.send_to(b"fast", to).unwrap();
    let mut order = Vec::new();
    for _ in 0..3 {
        let mut buf = [0; 16];
        let n = rx
            .recv(&mut buf)
            .expect("every datagram arrives: a slow link loses nothing");
        order.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    // Sent last, delivered first: the slowed link held the others back, in their order.
    assert_eq!(order, ["fast", "slow-1", "slow-2"]);
    assert_eq!(delay.stop().expect("stop the delay"), 2);
    // With nothing bound to the queue the rule lets packets through (--queue-bypass).
    assert!(
        udp_delivered(n1, n2),
        "a stopped delay must not drop packets"
    );
    fw.heal().unwrap();
    assert!(udp_delivered(n1, n2));
}

fn undrop_links_lifts_only_the_named_links() {
    let fw = setup();
    let (n1, n2, n3) = (node_ip(0), node_ip(1), node_ip(2));
    fw.drop_links(&[(n1, n2), (n3, n2)]).unwrap();
    assert!(!udp_delivered(n1, n2));
    fw.undrop_links(&[(n1, n2)]).unwrap();
    assert!(udp_delivered(n1, n2), "n1 -> n2 was lifted");
    assert!(!udp_delivered(n3, n2), "n3 -> n2 must stay dropped");
}

fn one_way_drop_link_and_heal() {
    let fw = setup();
    let (n1, n2) = (node_ip(0), node_ip(1));
    let (s1, s2) = (echo_server(n1), echo_server(n2));
    assert_tcp_works(n1, s2);
    assert_tcp_works(n2, s1);

    fw.drop_link(n1, n2).unwrap();
    println!("    rules after drop_link:\n{}", fw.rules().unwrap());
    assert_tcp_blocked(n1, s2);
    assert!(
        !udp_delivered(n1, n2),
        "n1 -> n2 datagram should be dropped"
    );
    assert!(
        udp_delivered(n2, n1),
        "n2 -> n1 datagram should still arrive"
    );
    // TCP from n2 still fails: its SYN arrives but the SYN-ACK (n1 -> n2) is
    // dropped. One-way faults only show as one-way for datagrams.
    assert_tcp_blocked(n2, s1);

    fw.heal().unwrap();
    assert!(!fw.rules().unwrap().contains("DROP"));
    assert_tcp_works(n1, s2);
    assert!(udp_delivered(n1, n2));
}

fn drop_links_applies_a_grudge() {
    let fw = setup();
    let nodes = [0, 1, 2];
    let ips = nodes.map(node_ip);
    let servers = ips.map(echo_server);
    let grudge = isolate_one(&nodes, 2);
    fw.drop_links(&grudge.ip_links(node_ip)).unwrap();
    let rules = fw.rules().unwrap();
    assert_eq!(rules.matches("DROP").count(), 4, "{rules}");
    assert_tcp_works(ips[0], servers[1]);
    assert_tcp_works(ips[1], servers[0]);
    for i in 0..2 {
        assert_tcp_blocked(ips[i], servers[2]);
        assert_tcp_blocked(ips[2], servers[i]);
    }
    fw.heal().unwrap();
    assert_tcp_works(ips[0], servers[2]);
    assert_tcp_works(ips[2], servers[1]);
}

fn established_connection_is_cut_then_resumes() {
    let fw = setup();
    let (n1, n2) = (node_ip(0), node_ip(1));
    let mut conn = connect_from(n1, echo_server(n2), WORKS_TIMEOUT).unwrap();
    conn.write_all(b"before").unwrap();
    let mut buf = [0; 6];
    conn.set_read_timeout(Some(WORKS_TIMEOUT)).unwrap();
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"before");

    fw.drop_link(n1, n2).unwrap();
    // The write only fills the local send buffer; it is the delivery that
    // must stop.
    conn.write_all(b"during").unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let err = conn
        .read(&mut buf)
        .expect_err("no data may cross a cut link");
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "{err}"
    );

    fw.heal().unwrap();
    // TCP retransmits the lost segment (RTO backoff: well under 10 s here).
    let started = Instant::now();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.read_exact(&mut buf)
        .expect("retransmission after heal");
    assert_eq!(&buf, b"during");
    println!("    resumed {:?} after heal", started.elapsed());
}

fn lossy_link_drops_about_the_given_fraction_once() {
    let fw = setup();
    let (n1, n2) = (node_ip(0), node_ip(1));
    fw.lossy_link(n1, n2, 0.5).unwrap();
    let rx = UdpSocket::bind((n2, 0)).unwrap();
    rx.set_nonblocking(true).unwrap();
    let tx = UdpSocket::bind((n1, 0)).unwrap();
    let (mut received, mut buf) = (0, [0; 8]);
    // Loopback delivers synchronously within send, so draining after each
    // batch sees every surviving datagram, and small batches keep the
    // receive buffer from overflowing (which would look like loss).
    for _ in 0..20 {
        for _ in 0..50 {
            tx.send_to(b"x", rx.local_addr().unwrap()).unwrap();
        }
        while rx.recv(&mut buf).is_ok() {
            received += 1;
        }
    }
    println!("    {received} of 1000 datagrams arrived at p = 0.5");
    // Binomial(1000, 0.5) has sd 16: 380..620 is > 7 sd. Judging packets in
    // both OUTPUT and INPUT would deliver about 250.
    assert!((380..=620).contains(&received), "{received}");
}

fn children_inherit_the_namespace() {
    let _fw = setup();
    let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
    let out = Command::new("readlink")
        .arg("/proc/self/ns/net")
        .output()
        .expect("run readlink");
    let theirs = String::from_utf8(out.stdout).unwrap();
    assert_eq!(theirs.trim(), ours.to_str().unwrap());
}

fn refuses_when_multi_threaded() {
    let before = std::fs::read_link("/proc/self/ns/net").unwrap();
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let parked = std::thread::spawn(move || wait.recv());
    let err = enter_private_network().expect_err("must refuse with two threads");
    drop(release);
    let _ = parked.join();
    assert!(
        matches!(err, NetError::MultiThreaded { threads: 2 }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("before starting the async runtime")
    );
    assert_eq!(std::fs::read_link("/proc/self/ns/net").unwrap(), before);
}
