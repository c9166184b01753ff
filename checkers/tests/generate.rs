//! The public history generator makes valid histories, and the checker catches one changed op.

use faultline_checkers::formats::{Format, read_history};
use faultline_checkers::generate::{RegisterWorkload, write_history};
use faultline_checkers::{
    CasFail, CheckOptions, CheckResult, History, Outcome, Value, check_by_name,
};

fn verdict(workload: &RegisterWorkload, history: &History, cas_fail: CasFail) -> CheckResult {
    let options = CheckOptions {
        cas_fail,
        ..Default::default()
    };
    check_by_name(history, workload.model_name(), &options)
        .expect("generated operations fit the model")
        .result
}

fn workloads() -> impl Iterator<Item = RegisterWorkload> {
    let shapes = [
        (1, 1, [2, 1, 1]),
        (3, 1, [2, 1, 1]),
        (10, 16, [2, 1, 1]),
        (20, 4, [1, 1, 0]),
        (100, 16, [2, 1, 1]),
    ];
    shapes.into_iter().flat_map(|(processes, keys, mix)| {
        (0..4).map(move |seed| RegisterWorkload {
            processes,
            keys,
            mix,
            operations: 1_500,
            info_fraction: 0.05,
            seed,
            ..Default::default()
        })
    })
}

#[test]
fn generated_histories_are_linearizable() {
    for w in workloads() {
        let h = w.generate();
        assert_eq!(h.operations.len(), w.operations);
        for cas_fail in [CasFail::CompareMismatch, CasFail::DidNotHappen] {
            assert_eq!(verdict(&w, &h, cas_fail), CheckResult::Valid, "{w:?}");
        }
    }
}

#[test]
fn generated_histories_survive_a_jsonl_round_trip() {
    let w = RegisterWorkload {
        operations: 3_000,
        processes: 100,
        info_fraction: 0.1,
        ..Default::default()
    };
    let h = w.generate();
    let mut text = Vec::new();
    write_history(&h, Format::Jsonl, &mut text).unwrap();
    let again = read_history(std::str::from_utf8(&text).unwrap(), Format::Jsonl).unwrap();
    assert_eq!(again.operations.len(), h.operations.len());
    for (a, b) in h.operations.iter().zip(&again.operations) {
        assert_eq!(
            (
                &a.f,
                &a.key,
                &a.input,
                &a.output,
                a.outcome,
                a.invoke_time,
                a.complete_time
            ),
            (
                &b.f,
                &b.key,
                &b.input,
                &b.output,
                b.outcome,
                b.invoke_time,
                b.complete_time
            )
        );
    }
    assert_eq!(verdict(&w, &again, CasFail::default()), CheckResult::Valid);
}

/// Changes the output of one `ok` read (a tenth into the history) to a value no operation
/// ever writes.
///
/// Early, because refuting is the expensive direction: every `info` write before the bad read
/// stays pending, and the search must try each subset of them before it gives up (a mutation
/// at the end of 1,500 operations with 5% `info` writes can take seconds).
fn read_a_value_never_written(h: &mut History) {
    let start = h.operations.len() / 10;
    let op = h.operations[start..]
        .iter_mut()
        .find(|op| op.f == "read" && op.outcome == Outcome::Ok)
        .expect("a read after the start");
    op.output = Some(Value::Int(-1));
}

/// Makes the write that a read observed complete as `fail`: it never happened, so nothing
/// could have read its value. Needs values that only one write writes.
fn fail_a_write_that_was_read(h: &mut History) {
    let ops = &mut h.operations;
    let seen = ops
        .iter()
        .rev()
        .find_map(|op| match (&op.output, op.f.as_str()) {
            (Some(v @ Value::Int(_)), "read") => Some(v.clone()),
            _ => None,
        })
        .expect("a read of a written value");
    let writers: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i].f == "write" && ops[i].input == seen)
        .collect();
    assert_eq!(writers.len(), 1, "the value {seen} is written once");
    ops[writers[0]].outcome = Outcome::Fail;
}

#[test]
fn mutated_histories_are_not_linearizable() {
    for w in workloads() {
        let mut h = w.generate();
        read_a_value_never_written(&mut h);
        for cas_fail in [CasFail::CompareMismatch, CasFail::DidNotHappen] {
            assert_eq!(verdict(&w, &h, cas_fail), CheckResult::Invalid, "{w:?}");
        }
    }
    for seed in 0..4 {
        let w = RegisterWorkload {
            mix: [1, 1, 0],
            values: 1 << 40,
            operations: 2_000,
            seed,
            ..Default::default()
        };
        let mut h = w.generate();
        fail_a_write_that_was_read(&mut h);
        assert_eq!(verdict(&w, &h, CasFail::default()), CheckResult::Invalid);
    }
}

/// The cache stores each linearized set compactly (everything before a watermark, plus a
/// window), so a long key costs memory in proportion to its length, not its square: 60,000
/// operations on one key (about 320,000 configurations) fit in 96 MiB. With a full bitset
/// per entry they needed about 2.4 GB and the check ended `Unknown` after 13,000.
#[test]
fn a_long_key_fits_a_small_cache() {
    let workload = RegisterWorkload {
        operations: 60_000,
        processes: 10,
        keys: 1,
        info_fraction: 0.01,
        seed: 7,
        ..Default::default()
    };
    let history = workload.generate();
    let options = CheckOptions {
        cache_bytes_max: 96 << 20,
        ..Default::default()
    };
    let verdict = check_by_name(&history, workload.model_name(), &options).expect("fits");
    assert_eq!(verdict.result, CheckResult::Valid);
}
