//! Tests of the public API: parsing and errors, builtins, generators and nemesis schedules.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use faultline_workloads::{
    Checker, FaultKind, FaultName, Generator, Location, Model, Op, OpKind, OpValue, ScheduledFault,
    Shape, ShapeName, Target, Workload, WorkloadError, builtin, builtin_names, nemesis_schedule,
    resolve, set_element_key,
};

/// A valid workload; the tests below break one line at a time, so line numbers are stable.
const BASE: &str = "\
name: t
checker: linearizability
keys:
  count: 5
mix:
  read: 1
  write: 1
  cas: 1
concurrency: 4
time_limit_secs: 30
";

fn parse(text: &str) -> Result<Workload, WorkloadError> {
    Workload::from_yaml(text, "suites/t.yaml")
}

/// Parses text that must fail, and checks that the message starts with `file:line:column:` and
/// mentions each of `words`.
fn expect_error(text: &str, line: usize, column: usize, words: &[&str]) -> WorkloadError {
    let error = parse(text).expect_err("the workload should be rejected");
    let message = error.to_string();
    let prefix = format!("suites/t.yaml:{line}:{column}: ");
    assert!(
        message.starts_with(&prefix),
        "`{message}` should start with `{prefix}`"
    );
    assert_eq!(error.location(), Some(Location { line, column }));
    for word in words {
        assert!(
            message.contains(word),
            "`{message}` should mention `{word}`"
        );
    }
    error
}

fn with_line(line: usize, replacement: &str) -> String {
    BASE.lines()
        .enumerate()
        .map(|(i, l)| if i + 1 == line { replacement } else { l })
        .map(|l| format!("{l}\n"))
        .collect()
}

fn workload(extra: &str) -> Workload {
    parse(&format!("{BASE}{extra}")).expect("valid workload")
}

fn simple(mix: &str, keys: &str) -> Workload {
    parse(&format!(
        "name: t\nchecker: linearizability\nkeys: {keys}\nmix: {mix}\ntime_limit_secs: 30\n"
    ))
    .expect("valid workload")
}

#[test]
fn base_parses_with_defaults() {
    let w = parse(BASE).unwrap();
    assert_eq!(w.model(), Some(Model::CasRegister));
    assert!(w.final_reads);
    assert_eq!(w.request_timeout_ms, 1000);
    assert_eq!(w.rate, None);
    assert!(w.nemesis.is_none() && w.phases.is_empty());
}

#[test]
fn every_builtin_parses_and_validates() {
    let names: Vec<_> = builtin_names().collect();
    assert_eq!(
        names,
        [
            "register",
            "causal",
            "set",
            "hotspot",
            "causal-store",
            "list-append",
            "rw-register",
            "bank",
            "lock",
            "watch",
            "membership"
        ]
    );
    for name in names {
        let text = builtin(name).unwrap();
        let w = Workload::from_yaml(text, name).unwrap();
        assert_eq!(w.name, name);
        assert_eq!(resolve(name).unwrap(), w);
    }
    let register = resolve("register").unwrap();
    assert_eq!(register.keys.count, 5);
    assert_eq!(register.concurrency, 10);
    assert_eq!(register.time_limit_secs, 30);
    assert!(register.mix.cas > 0);
    let causal = resolve("causal").unwrap();
    assert_eq!(causal.checker, Checker::Causal);
    assert_eq!(causal.model(), None);
    assert_eq!(causal.mix.cas, 0);
}

#[test]
fn resolve_reads_paths_and_lists_builtins_for_unknown_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mine.yaml");
    std::fs::write(&path, BASE).unwrap();
    let w = resolve(path.to_str().unwrap()).unwrap();
    assert_eq!(w.name, "t");

    let error = resolve("regsiter").unwrap_err();
    assert!(matches!(error, WorkloadError::Unknown { .. }));
    let message = error.to_string();
    assert!(
        message.contains("register") && message.contains("causal"),
        "{message}"
    );

    let missing = dir.path().join("missing.yaml");
    let error = resolve(missing.to_str().unwrap()).unwrap_err();
    assert!(matches!(error, WorkloadError::Io { .. }));
    assert!(error.to_string().contains("missing.yaml"));

    // An error inside a file names that file.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, with_line(9, "concurrency: 0")).unwrap();
    let message = resolve(bad.to_str().unwrap()).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!("{}:9:1: concurrency", bad.display())),
        "{message}"
    );
}

#[test]
fn unknown_field_names_line_column_and_field() {
    expect_error(
        &with_line(6, "  reed: 1"),
        6,
        3,
        &["mix", "unknown field `reed`", "expected one of", "`read`"],
    );
    expect_error(
        &with_line(5, "mixx:"),
        5,
        1,
        &["unknown field `mixx`", "`mix`"],
    );
}

#[test]
fn wrong_type_names_line_and_field() {
    expect_error(
        &with_line(9, "concurrency: many"),
        9,
        14,
        &["concurrency", "invalid type", "u32"],
    );
    expect_error(
        &with_line(4, "  count: -1"),
        4,
        10,
        &["keys.count", "invalid type: integer `-1`"],
    );
}

#[test]
fn unknown_fault_name_lists_valid_names() {
    let text = format!("{BASE}nemesis:\n  faults: [kill, explode]\n");
    expect_error(
        &text,
        12,
        18,
        &[
            "nemesis.faults[1]",
            "unknown variant `explode`",
            "kill",
            "pause",
            "partition",
            "loss",
            "clock",
            "corrupt-wal",
        ],
    );
    let text = format!(
        "{BASE}nemesis:\n  faults: [partition]\n  partition_shapes:\n    - halves\n    - triangle\n"
    );
    expect_error(
        &text,
        15,
        7,
        &["unknown variant `triangle`", "majority-ring"],
    );
}

#[test]
fn zero_concurrency_is_rejected_at_its_line() {
    let error = expect_error(
        &with_line(9, "concurrency: 0"),
        9,
        1,
        &["concurrency", "1..=1024"],
    );
    assert_eq!(error.field(), Some("concurrency"));
    expect_error(&with_line(9, "concurrency: 1025"), 9, 1, &["got 1025"]);
}

#[test]
fn write_retries_default_to_none_and_are_bounded() {
    assert_eq!(parse(BASE).unwrap().write_retries, 0);
    assert_eq!(workload("write_retries: 3\n").write_retries, 3);
    let error = expect_error(
        &format!("{BASE}write_retries: 11\n"),
        11,
        1,
        &["write_retries", "0..=10", "got 11"],
    );
    assert_eq!(error.field(), Some("write_retries"));
}

#[test]
fn phases_longer_than_the_time_limit_are_rejected() {
    let text = format!(
        "{BASE}phases:\n  - name: warmup\n    duration_secs: 10\n  - name: main\n    duration_secs: 25\n"
    );
    let error = expect_error(&text, 15, 5, &["phases[1].duration_secs", "35 s", "30"]);
    assert_eq!(error.field(), Some("phases[1].duration_secs"));
}

#[test]
fn causal_checker_with_cas_is_rejected() {
    let error = expect_error(
        &with_line(2, "checker: causal"),
        8,
        3,
        &["mix.cas", "causal"],
    );
    assert_eq!(error.field(), Some("mix.cas"));
    // Also in a phase's mix, in flow style.
    let text = format!(
        "{}phases:\n- name: a\n  duration_secs: 5\n  mix: {{ read: 1, cas: 2 }}\n",
        with_line(8, "  cas: 0")
    );
    let text = text.replacen("checker: linearizability", "checker: causal", 1);
    expect_error(&text, 14, 19, &["phases[0].mix.cas"]);
}

#[test]
fn other_rules_between_fields() {
    // `register` has no cas.
    expect_error(
        &with_line(2, "checker: linearizability\nmodel: register"),
        9,
        3,
        &["mix.cas", "register"],
    );
    // A model under the causal checker.
    let text = with_line(2, "checker: causal\nmodel: kv").replace("  cas: 1", "  cas: 0");
    expect_error(&text, 3, 1, &["model"]);
    // zipf_exponent without zipf.
    expect_error(
        &with_line(4, "  count: 5\n  zipf_exponent: 2"),
        5,
        3,
        &["keys.zipf_exponent", "zipf"],
    );
    // An all-zero mix.
    expect_error(
        &with_line(6, "  read: 0").replace("  write: 1\n  cas: 1", "  write: 0"),
        5,
        1,
        &["mix", "nonzero"],
    );
    // Nemesis interval too long for the run, and an empty fault list.
    expect_error(
        &format!("{BASE}nemesis:\n  faults: [kill]\n  interval_secs: 20\n"),
        13,
        3,
        &["nemesis.interval_secs"],
    );
    expect_error(
        &format!("{BASE}nemesis:\n  faults: []\n"),
        12,
        3,
        &["nemesis.faults"],
    );
    // Open-loop phases in a closed-loop workload.
    expect_error(
        &format!("{BASE}phases:\n  - {{ name: a, duration_secs: 5, rate: 10 }}\n"),
        12,
        34,
        &["phases[0].rate", "closed-loop"],
    );
    // Names go into directory names.
    expect_error(&with_line(1, "name: ../etc"), 1, 1, &["name"]);
}

#[test]
fn bad_input_never_panics() {
    for text in [
        "",
        "---",
        "[1, 2]",
        "name: [",
        "name: t\nchecker: linearizability\nmix: {read: 1}\ntime_limit_secs: 99999999999999999999\n",
        "\t- :",
        "name: t\nname: u\n",
        "a: &x [*x]",
    ] {
        let error = parse(text).expect_err(text);
        assert!(error.to_string().starts_with("suites/t.yaml:"), "{error}");
    }
}

#[test]
fn ops_are_deterministic_per_seed() {
    let w = resolve("register").unwrap();
    let run = |seed: u64| -> Vec<Op> {
        let mut generator = Generator::new(&w, seed);
        (0..1000u64)
            .map(|i| generator.next_op(i % 7, Duration::from_millis(i * 10)))
            .collect()
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
}

#[test]
fn a_process_ops_do_not_depend_on_interleaving() {
    let w = resolve("register").unwrap();
    let kinds_and_keys = |order: &[u64]| -> Vec<(OpKind, String)> {
        let mut generator = Generator::new(&w, 7);
        let mut of_process_0 = Vec::new();
        for &process in order {
            let op = generator.next_op(process, Duration::ZERO);
            if process == 0 {
                of_process_0.push((op.f, op.key));
            }
        }
        of_process_0
    };
    assert_eq!(
        kinds_and_keys(&[0, 1, 0, 1, 0, 2, 0]),
        kinds_and_keys(&[0, 0, 2, 2, 2, 0, 0])
    );
}

#[test]
fn written_values_are_unique_over_100k_ops() {
    let w = resolve("register").unwrap();
    let mut generator = Generator::new(&w, 1);
    let mut seen = HashSet::new();
    let mut written = 0;
    for i in 0..100_000u64 {
        let op = generator.next_op(i % 10, Duration::from_micros(i * 300));
        let new = match op.value {
            OpValue::Write(v) | OpValue::Add(v) => v,
            OpValue::Cas { new, .. } => new,
            OpValue::Nil | OpValue::Txn(_) | OpValue::Transfer { .. } | OpValue::Watch { .. } => {
                continue;
            }
        };
        assert!(seen.insert(new), "value {new} written twice");
        written += 1;
    }
    assert!(
        written > 40_000,
        "the register mix writes about half the time"
    );
}

#[test]
fn cas_expects_a_value_written_before_or_nil() {
    let w = resolve("register").unwrap();
    let mut generator = Generator::new(&w, 3);
    let mut written: HashMap<String, HashSet<u64>> = HashMap::new();
    let (mut nil, mut value) = (0, 0);
    for i in 0..20_000u64 {
        let op = generator.next_op(i % 10, Duration::ZERO);
        match op.value {
            OpValue::Nil => assert_eq!(op.f, OpKind::Read),
            OpValue::Add(_)
            | OpValue::Txn(_)
            | OpValue::Transfer { .. }
            | OpValue::Watch { .. } => {
                panic!("the register workload never adds")
            }
            OpValue::Write(v) => {
                assert_eq!(op.f, OpKind::Write);
                written.entry(op.key).or_default().insert(v);
            }
            OpValue::Cas { expected, new } => {
                assert_eq!(op.f, OpKind::Cas);
                let earlier = written.entry(op.key).or_default();
                match expected {
                    None => nil += 1,
                    Some(e) => {
                        assert!(earlier.contains(&e), "cas expects {e}, never written");
                        value += 1;
                    }
                }
                earlier.insert(new);
            }
        }
    }
    assert!(nil > 0 && value > nil, "nil {nil}, values {value}");
}

fn key_counts(w: &Workload, ops: u64) -> Vec<u64> {
    let mut generator = Generator::new(w, 11);
    let mut counts = vec![0u64; w.keys.count as usize];
    for i in 0..ops {
        let op = generator.next_op(i % 4, Duration::ZERO);
        let index: usize = op.key[1..].parse().unwrap();
        counts[index] += 1;
    }
    counts
}

#[test]
fn uniform_keys_are_roughly_uniform() {
    let w = simple("{ read: 1 }", "{ count: 10 }");
    let ops = 100_000;
    let counts = key_counts(&w, ops);
    let expected = ops as f64 / 10.0;
    let chi_square: f64 = counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum();
    // 9 degrees of freedom: 27.9 is the 99.9th percentile.
    assert!(
        chi_square < 27.9,
        "chi-square {chi_square}, counts {counts:?}"
    );
}

#[test]
fn zipf_keys_skew_towards_low_keys() {
    let w = simple(
        "{ read: 1 }",
        "{ count: 10, distribution: zipf, zipf_exponent: 1.0 }",
    );
    let ops = 100_000;
    let counts = key_counts(&w, ops);
    for pair in counts.windows(2) {
        assert!(pair[0] > pair[1], "counts should decrease: {counts:?}");
    }
    // P(k0) = 1 / H(10) = 0.3414 and P(k9) = 0.0341 for s = 1.
    let share = |i: usize| counts[i] as f64 / ops as f64;
    assert!((share(0) - 0.3414).abs() < 0.01, "{counts:?}");
    assert!((share(9) - 0.0341).abs() < 0.005, "{counts:?}");

    // A steeper exponent skews more.
    let steep = simple(
        "{ read: 1 }",
        "{ count: 10, distribution: zipf, zipf_exponent: 2.0 }",
    );
    assert!(key_counts(&steep, ops)[0] > counts[0] + 20_000);
}

#[test]
fn phases_select_the_mix_and_rate() {
    let w = workload(
        "rate: 100\nphases:\n  - name: reads\n    duration_secs: 10\n    mix: { read: 1 }\n    rate: 1000\n  - name: writes\n    duration_secs: 10\n    mix: { write: 1 }\n",
    );
    let mut generator = Generator::new(&w, 5);
    for i in 0..100 {
        assert_eq!(generator.next_op(i, Duration::from_secs(3)).f, OpKind::Read);
        assert_eq!(
            generator.next_op(i, Duration::from_secs(12)).f,
            OpKind::Write
        );
    }
    // After the phases, the top-level mix (all three kinds) applies again.
    let kinds: HashSet<OpKind> = (0..100)
        .map(|i| generator.next_op(i, Duration::from_secs(25)).f)
        .collect();
    assert_eq!(kinds.len(), 3);

    // 1000 ops/s for the first 10 s of schedule, then 100 ops/s.
    let mut generator = Generator::new(&w, 5);
    let mut first_phase = Duration::ZERO;
    let mut count = 0;
    while first_phase < Duration::from_secs(10) {
        first_phase += generator.next_interval().unwrap();
        count += 1;
    }
    assert!((9_000..11_000).contains(&count), "{count} arrivals in 10 s");
    let later: Duration = (0..1000).map(|_| generator.next_interval().unwrap()).sum();
    assert!(
        (8.5..11.5).contains(&later.as_secs_f64()),
        "1000 arrivals at 100/s took {later:?}"
    );
}

#[test]
fn closed_loop_has_no_intervals() {
    let mut generator = Generator::new(&parse(BASE).unwrap(), 1);
    assert_eq!(generator.next_interval(), None);
}

#[test]
fn final_reads_cover_every_key() {
    let w = parse(BASE).unwrap();
    let keys: Vec<String> = Generator::new(&w, 0)
        .final_read_ops()
        .into_iter()
        .map(|op| {
            assert_eq!((op.f, op.value), (OpKind::Read, OpValue::Nil));
            op.key
        })
        .collect();
    assert_eq!(keys, ["k0", "k1", "k2", "k3", "k4"]);
    let off = workload("final_reads: false\n");
    assert!(Generator::new(&off, 0).final_read_ops().is_empty());
}

#[test]
fn ops_serialize_like_history_values() {
    let yaml = |v: &OpValue| serde_yaml::to_string(v).unwrap();
    assert_eq!(yaml(&OpValue::Nil), "null\n");
    assert_eq!(yaml(&OpValue::Write(7)), "7\n");
    assert_eq!(
        yaml(&OpValue::Cas {
            expected: None,
            new: 8
        }),
        "- null\n- 8\n"
    );
    assert_eq!(OpKind::Cas.to_string(), "cas");
}

fn register_schedule(seed: u64) -> Vec<ScheduledFault> {
    nemesis_schedule(&resolve("register").unwrap(), seed, 5)
}

#[test]
fn nemesis_schedule_is_deterministic_per_seed() {
    assert_eq!(register_schedule(9), register_schedule(9));
    assert_ne!(register_schedule(9), register_schedule(10));
}

#[test]
fn nemesis_schedule_is_spaced_and_leaves_time_to_recover() {
    let w = resolve("register").unwrap();
    for seed in 0..50 {
        let schedule = nemesis_schedule(&w, seed, 5);
        // 30 s, every 5 s, none after 25 s: at 5, 10, 15, 20, 25.
        let starts: Vec<u64> = schedule.iter().map(|f| f.at.as_secs()).collect();
        assert_eq!(starts, [5, 10, 15, 20, 25]);
        for fault in &schedule {
            assert!(fault.duration >= Duration::from_millis(1250));
            assert!(fault.duration <= Duration::from_millis(3750));
            assert!(["partition", "kill", "pause"].contains(&fault.fault.name()));
            match &fault.fault {
                FaultKind::Kill {
                    target: Target::Random(node),
                }
                | FaultKind::Pause {
                    target: Target::Random(node),
                } => assert!(*node < 5),
                FaultKind::Partition { shape } => {
                    let links = shape.dropped_links(5, Some(0));
                    assert!(!links.is_empty(), "{shape:?}");
                    assert!(links.iter().all(|&(a, b)| a < 5 && b < 5 && a != b));
                }
                _ => {}
            }
        }
    }
    assert!(nemesis_schedule(&parse(BASE).unwrap(), 1, 5).is_empty());
    assert!(nemesis_schedule(&w, 1, 0).is_empty());
}

#[test]
fn nemesis_uses_only_configured_faults_shapes_and_targets() {
    let w = workload(
        "nemesis:\n  faults: [kill, partition, loss, clock, corrupt-wal]\n  interval_secs: 0.5\n  partition_shapes: [bridge]\n  kill_target: leader\n",
    );
    let schedule = nemesis_schedule(&w, 4, 5);
    assert_eq!(schedule.len(), 59);
    let mut names = HashSet::new();
    for fault in &schedule {
        names.insert(fault.fault.name());
        match &fault.fault {
            FaultKind::Kill { target } => assert_eq!(*target, Target::Leader),
            FaultKind::Partition { shape } => assert!(matches!(shape, Shape::Bridge { .. })),
            FaultKind::Loss { probability, .. } => assert!((0.1..=0.5).contains(probability)),
            FaultKind::Clock { offset_ms, .. } => {
                assert!((10..=60_000).contains(&offset_ms.abs()))
            }
            FaultKind::CorruptWal { target, .. } => {
                assert!(matches!(target, Target::Random(n) if *n < 5))
            }
            FaultKind::Pause { .. }
            | FaultKind::KillCoordinator { .. }
            | FaultKind::RestartVoter
            | FaultKind::DivergeLeader
            | FaultKind::Split { .. }
            | FaultKind::Merge { .. }
            | FaultKind::Move { .. }
            | FaultKind::ShuffleLeader { .. }
            | FaultKind::Membership { .. }
            | FaultKind::LearnerPartition
            | FaultKind::ConfigRace
            | FaultKind::ClockRate { .. }
            | FaultKind::ClockStrobe { .. }
            | FaultKind::LeaseSkew { .. } => {
                panic!("{} is not configured", fault.fault.name())
            }
        }
    }
    assert_eq!(names.len(), 5);

    // With one node no partition shape applies, so none is scheduled.
    let one_node = nemesis_schedule(&w, 4, 1);
    assert!(!one_node.is_empty());
    assert!(one_node.iter().all(|f| f.fault.name() != "partition"));
    let only_partition = workload("nemesis:\n  faults: [partition]\n");
    assert!(nemesis_schedule(&only_partition, 4, 1).is_empty());
    assert_eq!(
        only_partition.nemesis.unwrap().faults,
        [FaultName::Partition]
    );
}

#[test]
fn partition_shapes_cut_the_right_links() {
    let halves = Shape::Halves {
        minority: vec![1, 3],
        majority: vec![0, 2, 4],
    };
    let links = halves.dropped_links(5, None);
    assert_eq!(links.len(), 12);
    assert!(links.contains(&(1, 0)) && links.contains(&(0, 3)));
    assert!(!links.contains(&(0, 2)) && !links.contains(&(1, 3)));

    // In a majority ring every node still reaches a majority, and no two reach the same set.
    let ring = Shape::MajorityRing {
        ring: vec![2, 0, 4, 1, 3],
    };
    let cut = ring.dropped_links(5, None);
    let mut reach_sets = HashSet::new();
    for node in 0..5 {
        let reach: Vec<usize> = (0..5)
            .filter(|&other| other == node || !cut.contains(&(node, other)))
            .collect();
        assert_eq!(reach.len(), 3, "node {node} reaches {reach:?}");
        assert!(reach_sets.insert(reach));
    }

    let bridge = Shape::Bridge {
        left: vec![0, 1],
        bridge: 2,
        right: vec![3, 4],
    };
    assert!(
        bridge
            .dropped_links(5, None)
            .iter()
            .all(|&(a, b)| a != 2 && b != 2)
    );
    assert_eq!(Shape::IsolateLeader.dropped_links(5, None), []);
    assert_eq!(Shape::IsolateLeader.dropped_links(3, Some(1)).len(), 4);
    let one_way = Shape::OneWay {
        node: 0,
        direction: faultline_workloads::Direction::Outbound,
    };
    assert_eq!(one_way.dropped_links(3, None), [(0, 1), (0, 2)]);
    let _ = ShapeName::OneWay;
}

#[test]
fn the_set_workload_adds_unique_elements_and_reads_the_whole_set_once() {
    let w = resolve("set").unwrap();
    let mut generator = Generator::new(&w, 7);
    let mut elements = std::collections::BTreeSet::new();
    for process in 0..4 {
        for _ in 0..50 {
            let op = generator.next_op(process, Duration::ZERO);
            assert_eq!(op.f, OpKind::Add);
            assert_eq!(op.key, faultline_workloads::SET_KEY);
            let OpValue::Add(element) = op.value else {
                panic!("{op:?}");
            };
            assert!(elements.insert(element), "element {element} twice");
        }
    }
    let finals = generator.final_read_ops();
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0].f, OpKind::ReadAll);
    assert_eq!(finals[0].f.as_str(), "read");
    // Element keys sort as the elements do, and split points fall on early elements.
    assert!(set_element_key(9) < set_element_key(10));
    assert_eq!(
        generator.split_keys(3),
        [set_element_key(10), set_element_key(20)]
    );
}

#[test]
fn split_keys_fall_among_the_workloads_keys() {
    let w = workload("");
    let generator = Generator::new(&w, 1);
    // k0..k4 in key order; four partitions split at three of them, never at the first.
    let splits = generator.split_keys(4);
    assert_eq!(splits, ["k1", "k2", "k3"]);
    assert!(generator.split_keys(1).is_empty());
    // More partitions than keys: as many as the keys allow.
    assert_eq!(generator.split_keys(50).len(), 4);
}

#[test]
fn a_set_workload_with_reads_or_an_add_elsewhere_is_refused() {
    let error = parse("name: s\nchecker: set\nmix: {add: 1, read: 1}\ntime_limit_secs: 5\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("mix.read") && error.contains("only adds"),
        "{error}"
    );
    let error = parse(&BASE.replace("cas: 1", "add: 1"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("mix.add"), "{error}");
}

#[test]
fn kill_target_same_kills_one_node_chosen_by_the_seed_every_time() {
    let w = workload("nemesis:\n  faults: [kill]\n  interval_secs: 1\n  kill_target: same\n");
    let mut chosen = HashSet::new();
    for seed in 0..20 {
        let targets: HashSet<Target> = nemesis_schedule(&w, seed, 3)
            .into_iter()
            .map(|f| match f.fault {
                FaultKind::Kill { target } => target,
                other => panic!("only kill is configured, got {}", other.name()),
            })
            .collect();
        assert_eq!(targets.len(), 1, "seed {seed}: {targets:?}");
        chosen.extend(targets);
    }
    assert!(chosen.len() > 1, "the seed picks the node: {chosen:?}");
}

#[test]
fn a_split_fault_is_scheduled_by_name_and_replays_from_the_seed() {
    let w = workload("nemesis:\n  faults: [split]\n  interval_secs: 1\n");
    let schedule = nemesis_schedule(&w, 7, 3);
    assert!(!schedule.is_empty());
    assert!(schedule.iter().all(|f| f.fault.name() == "split"));
    assert_eq!(
        schedule,
        nemesis_schedule(&w, 7, 3),
        "same seed, same picks"
    );
    let picks: HashSet<_> = schedule
        .iter()
        .map(|f| match f.fault {
            FaultKind::Split { pick } => pick,
            _ => unreachable!(),
        })
        .collect();
    assert!(picks.len() > 1, "each split picks its own key: {picks:?}");
}

#[test]
fn the_causal_keyspace_needs_the_causal_checker_and_its_fields_need_the_keyspace() {
    let causal = "name: c\nchecker: causal\nmix: {read: 1, write: 1}\ntime_limit_secs: 10\n";
    let w = parse(&format!(
        "{causal}keyspace: causal\ncausal_resolve: lww\nsession_hop: 0.4\n"
    ))
    .unwrap();
    assert_eq!(w.keyspace, faultline_workloads::Keyspace::Causal);
    assert_eq!(
        w.causal_resolve,
        Some(faultline_workloads::CausalResolve::Lww)
    );
    let error = parse(&format!("{causal}causal_resolve: lww\n")).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("only applies to `keyspace: causal`"),
        "{error}"
    );
    let error = parse(&format!("{causal}keyspace: causal\nsession_hop: 1.5\n")).unwrap_err();
    assert!(error.to_string().contains("probability"), "{error}");
    let error = parse(
        "name: c\nchecker: linearizability\nkeyspace: causal\nmix: {read: 1}\ntime_limit_secs: 10\n",
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("needs `checker: causal`"),
        "{error}"
    );
    let error = parse(&format!("{causal}keyspace: eventual\n")).unwrap_err();
    assert!(error.to_string().contains("keyspace"), "{error}");
}

#[test]
fn a_fixed_clock_offset_sets_every_clock_step_and_nothing_else() {
    let free = workload("nemesis:\n  faults: [clock, kill]\n  interval_secs: 1\n");
    let fixed = workload(
        "nemesis:\n  faults: [clock, kill]\n  interval_secs: 1\n  clock_offset_ms: -300\n",
    );
    let (a, b) = (
        nemesis_schedule(&free, 7, 3),
        nemesis_schedule(&fixed, 7, 3),
    );
    assert_eq!(a.len(), b.len());
    let mut clocks = 0;
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((x.at, x.duration), (y.at, y.duration));
        match (&x.fault, &y.fault) {
            (
                FaultKind::Clock { target: t1, .. },
                FaultKind::Clock {
                    target: t2,
                    offset_ms,
                },
            ) => {
                assert_eq!(t1, t2);
                assert_eq!(*offset_ms, -300);
                clocks += 1;
            }
            (x, y) => assert_eq!(x, y),
        }
    }
    assert!(clocks > 0);
    let error = parse(&format!(
        "{BASE}nemesis:\n  faults: [kill]\n  clock_offset_ms: 300\n"
    ))
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("only applies when `faults` includes `clock`"),
        "{error}"
    );
}

const LIST_APPEND: &str = "\
name: t
checker: list-append
keys:
  count: 3
mix:
  read: 1
  write: 1
txn:
  max_ops: 4
  max_writes_per_key: 4
time_limit_secs: 30
";

#[test]
fn a_list_append_generator_makes_unique_appends_retires_keys_and_replays_from_its_seed() {
    let workload = parse(LIST_APPEND).expect("valid");
    let run = |seed| {
        let mut generator = Generator::new(&workload, seed);
        (0..200)
            .map(|i| generator.next_op(i % 4, Duration::ZERO))
            .collect::<Vec<Op>>()
    };
    let ops = run(7);
    assert_eq!(ops, run(7), "the same seed gives the same transactions");
    assert_ne!(ops, run(8));
    let mut appended = HashSet::new();
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for op in &ops {
        assert_eq!(op.f, OpKind::Txn);
        let OpValue::Txn(mops) = &op.value else {
            panic!("a transaction's value is its micro-ops: {op:?}");
        };
        assert!((1..=4).contains(&mops.len()));
        for m in mops {
            if m.f == faultline_workloads::MicroOpKind::Append {
                assert!(appended.insert(m.value), "appends are unique: {m:?}");
                *per_key.entry(m.key.clone()).or_default() += 1;
            } else {
                assert_eq!(m.value, None, "reads carry no value");
            }
        }
    }
    assert!(
        per_key.len() > 3,
        "keys are retired and replaced: {per_key:?}"
    );
    assert!(per_key.values().all(|n| *n <= 4), "{per_key:?}");
    let json = serde_json::to_string(&ops[0].value).unwrap();
    assert!(json.starts_with("[[\""), "Elle's micro-op form: {json}");
}

#[test]
fn transactional_fields_are_checked() {
    let bad = LIST_APPEND.replace("  max_ops: 4", "  max_ops: 65");
    let error = parse(&bad).expect_err("too long");
    assert!(error.to_string().contains("txn.max_ops"), "{error}");
    let bad = format!("{BASE}isolation: snapshot\n");
    let error = parse(&bad).expect_err("not transactional");
    assert!(
        error
            .to_string()
            .contains("only applies to `checker: list-append`"),
        "{error}"
    );
    let bad = LIST_APPEND.replace("  write: 1", "  write: 1\n  cas: 1");
    let error = parse(&bad).expect_err("no cas in a transaction");
    assert!(error.to_string().contains("mix.cas"), "{error}");
    let ok = format!("{LIST_APPEND}isolation: read-committed\n");
    assert_eq!(
        parse(&ok).unwrap().isolation,
        Some(faultline_workloads::Isolation::ReadCommitted)
    );
}

#[test]
fn a_bank_generator_transfers_between_two_accounts_within_the_limit() {
    let workload = resolve("bank").expect("builtin");
    let mut generator = Generator::new(&workload, 5);
    let (mut reads, mut transfers) = (0, 0);
    for i in 0..4_000u64 {
        let op = generator.next_op(i % 10, Duration::ZERO);
        match (op.f, &op.value) {
            (OpKind::Balances, OpValue::Nil) => reads += 1,
            (OpKind::Transfer, OpValue::Transfer { from, to, amount }) => {
                assert!(from != to && *from < 5 && *to < 5, "{op:?}");
                assert!((1..=5).contains(amount), "{op:?}");
                transfers += 1;
            }
            other => panic!("not a bank operation: {other:?}"),
        }
    }
    assert!(
        transfers > 2 * reads,
        "mix 1:3, got {reads} reads, {transfers} transfers"
    );
    let bad = builtin("bank")
        .unwrap()
        .replace("max_transfer: 5", "max_transfer: 500");
    let error = Workload::from_yaml(&bad, "bank.yaml").expect_err("above the total");
    assert!(error.to_string().contains("bank.max_transfer"), "{error}");
}

#[test]
fn a_lock_generator_gives_each_process_whole_sections_and_stalls_every_third() {
    let workload = resolve("lock").expect("builtin");
    let mut generator = Generator::new(&workload, 3);
    let steps: Vec<OpKind> = (0..15)
        .map(|_| generator.next_op(0, Duration::ZERO).f)
        .collect();
    use OpKind::{Acquire, FencedWrite, Release, Stall};
    let plain = [Acquire, FencedWrite, FencedWrite, Release];
    let stalled = [Acquire, FencedWrite, Stall, FencedWrite, Release];
    assert_eq!(steps[..4], plain);
    assert_eq!(steps[4..8], plain);
    assert_eq!(steps[8..13], stalled);
    // Another process keeps its own place.
    assert_eq!(generator.next_op(1, Duration::ZERO).f, Acquire);
    let stall = (0..5)
        .map(|_| generator.next_op(2, Duration::ZERO))
        .find(|op| op.f == Stall);
    assert!(stall.is_none(), "the first section does not stall");

    let bad = builtin("lock")
        .unwrap()
        .replace("ttl_ms: 1000", "ttl_ms: 10");
    let error = Workload::from_yaml(&bad, "lock.yaml").expect_err("below 1000");
    assert!(error.to_string().contains("lock.ttl_ms"), "{error}");
    let misplaced = builtin("bank").unwrap().to_string() + "lock:\n  ttl_ms: 2000\n";
    let error = Workload::from_yaml(&misplaced, "bank.yaml").expect_err("not a lock workload");
    assert!(
        error
            .to_string()
            .contains("only applies to `checker: lock`"),
        "{error}"
    );
}

#[test]
fn a_watch_generator_keeps_the_first_workers_watching_and_the_rest_writing() {
    let workload = resolve("watch").expect("builtin");
    let mut generator = Generator::new(&workload, 5);
    // Workers 0..3 watch, 3..6 write; a worker's next process (index + concurrency) too.
    for process in [0, 1, 2, 6, 8] {
        let op = generator.next_op(process, Duration::ZERO);
        assert_eq!(op.f, OpKind::WatchSegment, "process {process}");
        assert_eq!(
            op.value,
            OpValue::Watch {
                gap_ms: 200,
                segment_ms: 1000
            }
        );
    }
    for process in [3, 4, 5, 9] {
        assert_eq!(generator.next_op(process, Duration::ZERO).f, OpKind::Write);
    }
    let finals = generator.final_read_ops();
    assert!(finals.iter().all(|op| op.f == OpKind::WatchAll) && finals.len() == 3);

    let bad = builtin("watch")
        .unwrap()
        .replace("watchers: 3", "watchers: 6");
    let error = Workload::from_yaml(&bad, "watch.yaml").expect_err("nobody writes");
    assert!(error.to_string().contains("watch.watchers"), "{error}");
    let misplaced = builtin("bank").unwrap().to_string() + "watch:\n  watchers: 2\n";
    let error = Workload::from_yaml(&misplaced, "bank.yaml").expect_err("not a watch workload");
    assert!(
        error
            .to_string()
            .contains("only applies to `checker: watch`"),
        "{error}"
    );
}
