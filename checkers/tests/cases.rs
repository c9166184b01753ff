//! Hand-written histories with known verdicts, for the register and cas-register models.
//!
//! Each case is small enough to check by hand; the comment says why the verdict holds.

mod common;

use common::history;
use faultline_checkers::model::{CasFail, CasRegister, Register};
use faultline_checkers::{CheckOptions, CheckResult, History, Model, check};

fn verdict<M: Model>(model: &M, h: &History) -> CheckResult {
    check(model, h, &CheckOptions::default())
        .expect("model reads the history")
        .result
}

#[test]
fn info_write_linearized_after_a_later_read() {
    // The write's outcome is unknown; a read after its `info` still sees nil, a later one
    // sees 1. Valid only if the write takes effect after the first read: after its info.
    let h = history(
        "0 invoke write 1
         0 info write 1
         1 invoke read
         1 ok read nil
         1 invoke read
         1 ok read 1",
    );
    assert_eq!(verdict(&Register, &h), CheckResult::Valid);
    // Had the write completed `ok`, the first read would be stale.
    let h = history(
        "0 invoke write 1
         0 ok write 1
         1 invoke read
         1 ok read nil
         1 invoke read
         1 ok read 1",
    );
    assert_eq!(verdict(&Register, &h), CheckResult::Invalid);
}

#[test]
fn info_write_that_never_took_effect() {
    // Nothing ever reads 1: the write may simply not have happened.
    let h = history(
        "0 invoke write 1
         0 info write 1
         1 invoke write 2
         1 ok write 2
         1 invoke read
         1 ok read 2
         2 invoke read
         2 ok read 2",
    );
    assert_eq!(verdict(&Register, &h), CheckResult::Valid);
    // An invocation with no completion at all is unknown in the same way.
    let h = history(
        "0 invoke write 1
         1 invoke read
         1 ok read nil",
    );
    assert_eq!(verdict(&Register, &h), CheckResult::Valid);
}

#[test]
fn failed_cas_depends_on_its_reading() {
    // The register is nil throughout, so a cas from nil would have matched. Read as "the
    // compare did not match" (Porcupine) that is impossible; read as "did not happen"
    // (Knossos) the cas is dropped and the history is valid.
    let h = history(
        "0 invoke cas [nil 1]
         0 fail cas [nil 1]
         1 invoke read
         1 ok read nil",
    );
    assert_eq!(
        verdict(&CasRegister::new(CasFail::CompareMismatch), &h),
        CheckResult::Invalid
    );
    assert_eq!(
        verdict(&CasRegister::new(CasFail::DidNotHappen), &h),
        CheckResult::Valid
    );
    // A failed cas whose compare really could not match is valid under both.
    let h = history(
        "0 invoke write 2
         0 ok write 2
         0 invoke cas [nil 1]
         0 fail cas [nil 1]
         1 invoke read
         1 ok read 2",
    );
    assert_eq!(
        verdict(&CasRegister::new(CasFail::CompareMismatch), &h),
        CheckResult::Valid
    );
    assert_eq!(
        verdict(&CasRegister::new(CasFail::DidNotHappen), &h),
        CheckResult::Valid
    );
}

#[test]
fn successful_and_unknown_cas() {
    let h = history(
        "0 invoke write 1
         0 ok write 1
         0 invoke cas [1 2]
         0 ok cas [1 2]
         1 invoke cas [2 3]
         1 info cas [2 3]
         2 invoke read
         2 ok read 2
         2 invoke read
         2 ok read 3",
    );
    assert_eq!(verdict(&CasRegister::default(), &h), CheckResult::Valid);
    // An ok cas whose `from` never held is impossible.
    let h = history(
        "0 invoke cas [5 6]
         0 ok cas [5 6]",
    );
    assert_eq!(verdict(&CasRegister::default(), &h), CheckResult::Invalid);
}

#[test]
fn reads_of_the_initial_nil() {
    let h = history(
        "0 invoke read
         0 ok read nil
         1 invoke write 1
         1 ok write 1
         0 invoke read
         0 ok read 1",
    );
    assert_eq!(verdict(&Register, &h), CheckResult::Valid);
    assert_eq!(verdict(&CasRegister::default(), &h), CheckResult::Valid);
    // Nil after a completed write is stale.
    let h = history(
        "1 invoke write 1
         1 ok write 1
         0 invoke read
         0 ok read nil",
    );
    assert_eq!(verdict(&Register, &h), CheckResult::Invalid);
}

#[test]
fn stale_read_is_invalid_and_explained() {
    let h = history(
        "0 invoke write 1
         0 ok write 1
         1 invoke write 2
         1 ok write 2
         2 invoke read
         2 ok read 1",
    );
    let v = check(&Register, &h, &CheckOptions::default()).unwrap();
    assert_eq!(v.result, CheckResult::Invalid);
    let e = v.partitions[0].explanation.as_ref().expect("explained");
    assert_eq!(e.failing_op, 2, "the stale read is where the search stops");
    assert_eq!(e.prefix, vec![0, 1], "both writes linearize");
    assert_eq!(e.states, vec!["nil", "1", "2"]);
}

#[test]
fn concurrent_writes_with_reads_in_either_order() {
    for (first, second) in [(1, 2), (2, 1)] {
        // Both writes overlap both reads, so either order of the writes is possible.
        let h = history(&format!(
            "0 invoke write 1
             1 invoke write 2
             2 invoke read
             2 ok read {first}
             2 invoke read
             2 ok read {second}
             0 ok write 1
             1 ok write 2
             2 invoke read
             2 ok read {second}"
        ));
        assert_eq!(
            verdict(&Register, &h),
            CheckResult::Valid,
            "reads {first} then {second}"
        );
        // But the final read must agree with the later write.
        let h = history(&format!(
            "0 invoke write 1
             1 invoke write 2
             2 invoke read
             2 ok read {first}
             2 invoke read
             2 ok read {second}
             0 ok write 1
             1 ok write 2
             2 invoke read
             2 ok read {first}"
        ));
        assert_eq!(
            verdict(&Register, &h),
            CheckResult::Invalid,
            "flip-flop {first}/{second}"
        );
    }
}

#[test]
fn keys_are_independent_registers() {
    let h = faultline_checkers::formats::read_history(
        r#"{"type":"invoke","process":0,"f":"write","key":"a","value":1}
{"type":"ok","process":0,"f":"write","key":"a","value":1}
{"type":"invoke","process":0,"f":"read","key":"b"}
{"type":"ok","process":0,"f":"read","key":"b","value":null}"#,
        faultline_checkers::Format::Jsonl,
    )
    .unwrap();
    let v = check(&Register, &h, &CheckOptions::default()).unwrap();
    assert_eq!(v.result, CheckResult::Valid);
    assert_eq!(v.partitions.len(), 2);
}

#[test]
fn limits_give_unknown_never_a_guess() {
    // Many concurrent writes of distinct values with a read of a value never written make a
    // large invalid search; a tiny cache bound must stop it with Unknown.
    let mut text = String::new();
    for p in 0..14 {
        text.push_str(&format!("{p} invoke write {p}\n"));
    }
    text.push_str("99 invoke read\n99 ok read 1000\n");
    for p in 0..14 {
        text.push_str(&format!("{p} ok write {p}\n"));
    }
    let h = history(&text);
    let options = CheckOptions {
        cache_bytes_max: 1,
        ..CheckOptions::default()
    };
    let v = check(&Register, &h, &options).unwrap();
    assert!(
        matches!(v.result, CheckResult::Unknown { .. }),
        "{:?}",
        v.result
    );
    let options = CheckOptions {
        timeout: Some(std::time::Duration::ZERO),
        ..CheckOptions::default()
    };
    let v = check(&Register, &h, &options).unwrap();
    assert!(
        matches!(v.result, CheckResult::Unknown { .. }),
        "{:?}",
        v.result
    );
}

#[test]
fn operations_a_model_cannot_read_are_errors() {
    let h = history("0 invoke cas [1 2]\n0 ok cas [1 2]");
    let err = check(&Register, &h, &CheckOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not an operation of the register model"),
        "{err}"
    );
    let h = history("0 invoke cas 1\n0 ok cas 1");
    let err = check(&CasRegister::default(), &h, &CheckOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("[from to]"), "{err}");
}

/// A cas the node refused (it never reached the state machine) says so with
/// `"not_applied": true`; it is then not read as "the compare did not match", which
/// would wrongly demand that the register held some other value. Found by a nightly run:
/// a cas forwarded to a leader that had just stepped down came back ABORTED.
#[test]
fn a_refused_cas_is_not_read_as_a_mismatch() {
    let text = |flag: &str| {
        format!(
            r#"{{"type":"invoke","process":0,"time":1,"f":"write","key":"k","value":5}}
{{"type":"ok","process":0,"time":2,"f":"write","key":"k","value":5}}
{{"type":"invoke","process":1,"time":3,"f":"cas","key":"k","value":[5,6]}}
{{"type":"fail","process":1,"time":4,"f":"cas","key":"k","value":[5,6]{flag}}}
{{"type":"invoke","process":2,"time":5,"f":"read","key":"k","value":null}}
{{"type":"ok","process":2,"time":6,"f":"read","key":"k","value":5}}"#
        )
    };
    let model = CasRegister::new(CasFail::CompareMismatch);
    let read = |t: String| {
        faultline_checkers::formats::read_history(&t, faultline_checkers::Format::Jsonl).unwrap()
    };
    assert_eq!(
        verdict(&model, &read(text(r#","not_applied":true"#))),
        CheckResult::Valid
    );
    assert_eq!(
        verdict(&model, &read(text(""))),
        CheckResult::Invalid,
        "without the flag the cas saw 5 and failed"
    );
}
