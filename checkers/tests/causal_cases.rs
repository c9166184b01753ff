//! Hand-written minimal histories for the causal checker: one per bad pattern of Bouajjani et
//! al., "On Verifying Causal Consistency" (POPL 2017), and one per session guarantee of Terry
//! et al. (PDIS 1994), each with a minimal valid variant, so that every check is seen both to
//! fire and to stay quiet. Histories use `common::causal::ops` notation: `PROCESS r|w KEY
//! VALUE [info|fail]`, one operation per line, ids from 0.

mod common;

use common::causal::ops;
use faultline_checkers::formats::{Format, read_history};
use faultline_checkers::{
    AnomalyKind, CausalOptions, CausalVerdict, ConsistencyLevel, Error, History, check_causal,
};

fn at(level: ConsistencyLevel, h: &History) -> CausalVerdict {
    let options = CausalOptions {
        level,
        ..CausalOptions::default()
    };
    check_causal(h, &options).expect("a well-formed causal history")
}

fn kinds(verdict: &CausalVerdict) -> Vec<AnomalyKind> {
    verdict.anomalies.iter().map(|a| a.kind).collect()
}

/// `bad` has exactly one anomaly, of `kind`, naming `ops` (in any order); `good` has none.
/// Both are checked at CC and CCv: every pattern but CyclicCF is a CC pattern.
fn case(kind: AnomalyKind, bad: &str, ops_named: &[usize], good: &str) {
    for level in [
        ConsistencyLevel::CausalConsistency,
        ConsistencyLevel::CausalConvergence,
    ] {
        let verdict = at(level, &ops(bad));
        assert_eq!(kinds(&verdict), vec![kind], "{level:?}: {verdict:#?}");
        assert!(!verdict.valid);
        let mut named = verdict.anomalies[0].ops.clone();
        named.sort_unstable();
        assert_eq!(named, ops_named, "{}", verdict.anomalies[0].explanation);
        let verdict = at(level, &ops(good));
        assert!(verdict.valid, "{level:?}: valid variant: {verdict:#?}");
        assert_eq!(verdict.anomalies_found, 0);
    }
}

#[test]
fn cyclic_co() {
    // Each session reads the other's write, which it wrote after its own read.
    case(
        AnomalyKind::CyclicCO,
        "0 r x 1
         0 w y 1
         1 r y 1
         1 w x 1",
        &[0, 1, 2, 3],
        "0 r x nil
         0 w y 1
         1 r y 1
         1 w x 1",
    );
}

#[test]
fn write_co_init_read() {
    // w(x,1) reaches session 3 through three hops, none of them a session guarantee's
    // one-hop pattern; session 3 then reads x as nil. In the valid variant session 1 never
    // saw x=1, so it is not in session 3's causal past.
    case(
        AnomalyKind::WriteCOInitRead,
        "0 w x 1
         1 r x 1
         1 w y 2
         2 r y 2
         2 w z 3
         3 r z 3
         3 r x nil",
        &[0, 6],
        "0 w x 1
         1 r x nil
         1 w y 2
         2 r y 2
         2 w z 3
         3 r z 3
         3 r x nil",
    );
}

#[test]
fn thin_air_read() {
    case(
        AnomalyKind::ThinAirRead,
        "0 w x 1
         1 r x 2",
        &[1],
        "0 w x 1
         1 r x 1",
    );
    // A failed write did not happen: reading its value is reading from thin air, and the
    // anomaly names the failed write.
    case(
        AnomalyKind::ThinAirRead,
        "0 w x 1 fail
         1 r x 1",
        &[0, 1],
        "0 w x 1 fail
         1 r x nil",
    );
}

#[test]
fn write_co_read() {
    // x=1 is overwritten by x=2 (session 1 read x=1 first), and x=2 reaches session 4 by a
    // chain of other keys; session 4 then reads the overwritten x=1.
    case(
        AnomalyKind::WriteCORead,
        "0 w x 1
         1 r x 1
         1 w x 2
         2 r x 2
         2 w y 3
         3 r y 3
         3 w z 4
         4 r z 4
         4 r x 1",
        &[0, 2, 8],
        "0 w x 1
         1 r x 1
         1 w x 2
         2 r x 2
         2 w y 3
         3 r y 3
         3 w z 4
         4 r z 4
         4 r x 2",
    );
}

#[test]
fn cyclic_cf_is_a_convergence_violation_only() {
    // Each session writes x, then reads the other's value: each read saw both writes and
    // chose the other, so the sessions disagree on the order of the two writes. That is
    // causally consistent (CC) but no single arbitration order exists (CCv).
    let bad = ops("0 w x 1
                   0 r x 2
                   1 w x 2
                   1 r x 1");
    assert!(at(ConsistencyLevel::CausalConsistency, &bad).valid);
    let verdict = at(ConsistencyLevel::CausalConvergence, &bad);
    assert_eq!(kinds(&verdict), vec![AnomalyKind::CyclicCF], "{verdict:#?}");
    let mut named = verdict.anomalies[0].ops.clone();
    named.sort_unstable();
    assert_eq!(named, vec![0, 1, 2, 3]);
    let explanation = &verdict.anomalies[0].explanation;
    assert!(explanation.contains("-cf->"), "{explanation}");
    assert!(explanation.contains("causal convergence"), "{explanation}");
    // If session 1 reads its own x=2 instead, x=1 then x=2 is an order both agree with.
    let good = ops("0 w x 1
                    0 r x 2
                    1 w x 2
                    1 r x 2");
    assert!(at(ConsistencyLevel::CausalConvergence, &good).valid);
}

#[test]
fn read_your_writes() {
    case(
        AnomalyKind::ReadYourWrites,
        "0 w x 1
         0 r x nil",
        &[0, 1],
        "0 w x 1
         0 r x 1",
    );
    // Stale rather than initial: session 0 overwrote x=1 with x=2, then read x=1 back.
    case(
        AnomalyKind::ReadYourWrites,
        "1 w x 1
         0 r x 1
         0 w x 2
         0 r x 1",
        &[0, 2, 3],
        "1 w x 1
         0 r x 1
         0 w x 2
         0 r x 2",
    );
}

#[test]
fn monotonic_reads() {
    case(
        AnomalyKind::MonotonicReads,
        "0 w x 1
         1 r x 1
         1 r x nil",
        &[0, 1, 2],
        "0 w x 1
         1 r x 1
         1 r x 1",
    );
}

#[test]
fn monotonic_writes() {
    // Session 1 sees session 0's second write but not its first.
    case(
        AnomalyKind::MonotonicWrites,
        "0 w x 1
         0 w y 2
         1 r y 2
         1 r x nil",
        &[0, 1, 2, 3],
        "0 w x 1
         0 w y 2
         1 r y 2
         1 r x 1",
    );
}

#[test]
fn writes_follow_reads() {
    // Session 1 wrote y=2 after reading x=1; session 2 sees y=2 but not x=1.
    case(
        AnomalyKind::WritesFollowReads,
        "0 w x 1
         1 r x 1
         1 w y 2
         2 r y 2
         2 r x nil",
        &[0, 1, 2, 3, 4],
        "0 w x 1
         1 r x 1
         1 w y 2
         2 r y 2
         2 r x 1",
    );
}

#[test]
fn the_story_names_sessions_values_and_operations() {
    let verdict = at(
        ConsistencyLevel::CausalConsistency,
        &ops("3 w x 5
              1 r x 5
              1 r x nil"),
    );
    assert_eq!(
        verdict.anomalies[0].explanation,
        "session 3 wrote x=5 (op 0), session 1 read x=5 (op 1) then read x=nil (op 2), the \
         initial value: monotonic reads violated"
    );
}

#[test]
fn info_writes_may_or_may_not_have_happened() {
    // Nobody saw it: it may not have happened, even for its own process, which went on.
    let h = ops("0 w x 1 info
                 0 r x nil
                 1 r x nil");
    assert!(at(ConsistencyLevel::CausalConvergence, &h).valid);
    // Someone saw it: it happened, and carries its session's past with it.
    let h = ops("0 w y 7
                 0 w x 1 info
                 1 r x 1
                 1 r y nil");
    let verdict = at(ConsistencyLevel::CausalConsistency, &h);
    assert_eq!(kinds(&verdict), vec![AnomalyKind::MonotonicWrites]);
    // Reads with unknown outcome constrain nothing.
    let h = ops("0 w x 1
                 0 r x nil info");
    assert!(at(ConsistencyLevel::CausalConsistency, &h).valid);
    // Had the write completed ok, its own process must see it.
    let h = ops("0 w x 1
                 0 r x nil");
    assert!(!at(ConsistencyLevel::CausalConsistency, &h).valid);
}

#[test]
fn failed_writes_did_not_happen() {
    let h = ops("0 w x 1 fail
                 0 r x nil");
    assert!(at(ConsistencyLevel::CausalConvergence, &h).valid);
}

#[test]
fn anomalies_are_capped_but_counted() {
    // Five sessions each miss their own write.
    let text: String = (0..5)
        .map(|p| format!("{p} w x {}\n{p} r x nil\n", p + 1))
        .collect();
    let options = CausalOptions {
        anomalies_max: 2,
        ..CausalOptions::default()
    };
    let verdict = check_causal(&ops(&text), &options).unwrap();
    assert_eq!(verdict.anomalies.len(), 2);
    assert_eq!(verdict.anomalies_found, 5);
    assert!(verdict.truncated());
    assert_eq!(verdict.anomaly_counts[&AnomalyKind::ReadYourWrites], 5);
}

#[test]
fn duplicate_written_value_names_both_operations() {
    let text = r#"{"type":"invoke","process":0,"f":"write","key":"x","value":5}
{"type":"ok","process":0,"f":"write","key":"x","value":5}
{"type":"invoke","process":1,"f":"write","key":"x","value":5}
{"type":"fail","process":1,"f":"write","key":"x","value":5}"#;
    let h = read_history(text, Format::Jsonl).unwrap();
    let err = check_causal(&h, &CausalOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::DuplicateWrite {
                first: 0,
                second: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "operations 0 (line 1) and 1 (line 3) both write 5 to key \"x\"; the causal checker \
         needs every value written to a key to be unique, so that a read names the write it \
         saw: make the workload write unique values"
    );
    // The same value on two keys is fine.
    let h = ops("0 w x 5
                 1 w y 5");
    assert!(check_causal(&h, &CausalOptions::default()).unwrap().valid);
}

#[test]
fn inputs_the_checker_cannot_read_are_errors() {
    let too_many = CausalOptions {
        operations_max: 2,
        ..CausalOptions::default()
    };
    let err = check_causal(&ops("0 w x 1\n0 r x 1\n0 r x 1"), &too_many).unwrap_err();
    assert!(matches!(
        err,
        Error::TooManyOperations {
            operations: 3,
            operations_max: 2
        }
    ));
    assert!(err.to_string().contains("split the history"), "{err}");

    let mut h = ops("0 w x 1");
    h.operations[0].f = "cas".into();
    let err = check_causal(&h, &CausalOptions::default()).unwrap_err();
    assert!(err.to_string().contains("only `read` and `write`"), "{err}");

    let h = ops("0 w x nil");
    let err = check_causal(&h, &CausalOptions::default()).unwrap_err();
    assert!(err.to_string().contains("writes nil"), "{err}");

    // Built by hand, a history can break the invariant that ok operations have outputs.
    let mut h = ops("0 r x 1");
    h.operations[0].output = None;
    let err = check_causal(&h, &CausalOptions::default()).unwrap_err();
    assert!(err.to_string().contains("no value"), "{err}");
}

#[test]
fn siblings_read_from_each_write_and_none_may_be_overwritten_in_the_past() {
    // Two sessions write x concurrently; a third reads both siblings: causal. Had one
    // session written both, in order, the first would be overwritten in the read's past.
    case(
        AnomalyKind::ReadYourWrites,
        "0 w x 1
         0 w x 2
         0 r x 1+2",
        &[0, 1, 2],
        "0 w x 1
         1 w x 2
         0 r x 1+2",
    );
    // Reading from a sibling orders the reader after it, as any read does.
    case(
        AnomalyKind::MonotonicWrites,
        "0 w y 2
         1 w x 1
         1 w y 3
         2 r y 2+3
         2 r x nil",
        &[1, 2, 3, 4],
        "0 w y 2
         1 w x 1
         1 w y 3
         2 r y 2+3
         2 r x 1",
    );
}

#[test]
fn sibling_reads_order_no_writes_for_convergence() {
    // A multi-value register: 2 is overwritten by 5 and 4 by 6, while 1 and 3 stay as
    // siblings. Read as arbitration, the sibling reads would put 2 before 3 and 4 before
    // 1, closing the cycle 1 -> 2 -> 3 -> 4 -> 1 with causal order: a false CyclicCF.
    let history = ops("0 w x 1
         1 r x 1
         1 w y 2
         2 w y 3
         2 w x 4
         3 r y 2
         3 w y 5
         4 r y 3+5
         5 r x 4
         5 w x 6
         6 r x 1+6");
    for level in [
        ConsistencyLevel::CausalConsistency,
        ConsistencyLevel::CausalConvergence,
    ] {
        let verdict = at(level, &history);
        assert!(verdict.valid, "{level:?}: {verdict:#?}");
    }
}
