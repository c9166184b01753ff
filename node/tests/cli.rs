//! The `faultline-node` binary on bad input: a clear error naming the problem and the
//! fix, exit status 2, never a panic.
//!
//! (These tests also make `cargo test --workspace` build the binary that the harness's
//! integration tests start.)

use std::process::{Command, Output};

fn node(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_faultline-node"))
        .args(args)
        .output()
        .expect("run faultline-node")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_missing_id_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = node(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("--id is required"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_malformed_peer_is_named_with_an_example() {
    let output = node(&["--id", "1", "--peer", "2:127.0.0.1:7002"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("expected ID=ADDR"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_node_listed_as_its_own_peer_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8");
    let output = node(&[
        "--id",
        "1",
        "--peer",
        "1=127.0.0.1:7001",
        "--data-dir",
        data,
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("own id 1"), "{}", stderr(&output));
}

#[test]
fn bad_config_yaml_names_file_line_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("node.yaml");
    std::fs::write(
        &config,
        "id: 1\nlisten: 127.0.0.1:7001\nelection_timeout: 5\n",
    )
    .expect("write");
    let output = node(&["--config", config.to_str().expect("utf-8")]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(
        text.contains("node.yaml") && text.contains("line 3") && text.contains("election_timeout"),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn inconsistent_timeouts_are_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("node.yaml");
    std::fs::write(
        &config,
        "id: 1\nheartbeat_interval_ticks: 20\nelection_timeout_ticks_min: 10\n",
    )
    .expect("write");
    let output = node(&["--config", config.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("must exceed heartbeat_interval_ticks"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_address_in_use_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let output = node(&[
        "--id",
        "1",
        "--listen",
        &addr,
        "--data-dir",
        dir.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains(&format!("cannot listen on {addr}")),
        "{}",
        stderr(&output)
    );
}
