//! Jepsen's text log of operations (`jepsen.log`): the lines `jepsen.util` writes as a test
//! runs, one event each, `PROCESS<tab>:TYPE<tab>:F<tab>VALUE`, after the logger's prefix
//! (`INFO  jepsen.util - `). Older Jepsen tests left only this log behind; Porcupine's and
//! Horn and Kroening's etcd histories are in it.
//!
//! Lines that are not operations (the rest of a Jepsen log: setup, nemesis messages, stack
//! traces) are skipped. Each operation line's fields are EDN and go through the EDN reader,
//! so values read exactly as they would in `history.edn`.

use crate::error::Error;
use crate::history::Event;

/// What the logger writes before an operation's fields.
const OPERATION_LOGGER: &str = "jepsen.util - ";

/// Reads every operation of a Jepsen text log.
pub fn read_events(text: &str) -> Result<Vec<Event>, Error> {
    // Each operation line becomes one EDN map on the same line number, so the EDN reader's
    // errors and the events' `line` point into the original log.
    let mut edn = String::with_capacity(text.len() + text.len() / 2);
    let mut operations = 0usize;
    for (n, line) in text.lines().enumerate() {
        if let Some(map) = operation_map(line).map_err(|message| Error::Syntax {
            line: n + 1,
            column: None,
            message,
        })? {
            edn.push_str(&map);
            operations += 1;
        }
        edn.push('\n');
    }
    if operations == 0 && !text.trim().is_empty() {
        return Err(Error::Syntax {
            line: 1,
            column: None,
            message: "no operation lines: a Jepsen log's operations look like \
                      `INFO  jepsen.util - 3\t:invoke\t:write\t4`; if this is an EDN history, \
                      pass --format edn"
                .to_string(),
        });
    }
    super::edn::read_events(&edn)
}

/// The EDN map for one log line, or `None` if the line is not an operation.
fn operation_map(line: &str) -> Result<Option<String>, String> {
    let Some(at) = line.find(OPERATION_LOGGER) else {
        return Ok(None);
    };
    let fields = &line[at + OPERATION_LOGGER.len()..];
    let mut rest = fields.trim_start();
    let mut take = || {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (token, after) = rest.split_at(end);
        rest = after.trim_start();
        token
    };
    let process = take();
    let kind = take();
    let f = take();
    // `jepsen.util` also logs other things; an operation starts with a process (a number
    // or :nemesis) and a type keyword.
    let is_process = process == ":nemesis" || process.bytes().all(|b| b.is_ascii_digit());
    if process.is_empty() || !is_process || !kind.starts_with(':') {
        return Ok(None);
    }
    if f.is_empty() {
        return Err(format!(
            "the operation line `{}` has no :f after its type; expected \
             PROCESS<tab>:TYPE<tab>:F<tab>VALUE",
            fields.trim()
        ));
    }
    let value = rest.trim_end();
    let value = if value.is_empty() { "nil" } else { value };
    Ok(Some(format!(
        "{{:process {process} :type {kind} :f {f} :value {value}}}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{EventType, ProcessId, Value};

    #[test]
    fn operation_lines_read_as_events_and_the_rest_is_skipped() {
        let text = "INFO  jepsen.core - Running test\n\
                    INFO  jepsen.util - 2\t:invoke\t:cas\t[3 0]\n\
                    \n\
                    INFO  jepsen.util - 2   :fail   :cas    [3 0]\n\
                    INFO  jepsen.util - 4\t:info\t:write\t:timed-out\n\
                    INFO  jepsen.util - :nemesis\t:info\t:start\tnil\n";
        let events = read_events(text).expect("reads");
        assert_eq!(events.len(), 4);
        assert_eq!(events[0].line, 2);
        assert_eq!(events[0].kind, EventType::Invoke);
        assert_eq!(events[0].process, ProcessId::Client(2));
        assert_eq!(events[0].f, "cas");
        assert_eq!(
            events[0].value,
            Value::List(vec![Value::Int(3), Value::Int(0)])
        );
        assert_eq!(events[1].kind, EventType::Fail);
        assert_eq!(events[1].line, 4);
        assert_eq!(events[2].value, Value::Str("timed-out".into()));
        assert_eq!(events[3].process, ProcessId::Nemesis);
    }

    #[test]
    fn bad_lines_name_the_line_and_the_expected_shape() {
        let error = read_events("INFO  jepsen.util - 1\t:invoke\n").unwrap_err();
        let message = error.to_string();
        assert!(message.contains("line 1"), "{message}");
        assert!(message.contains("PROCESS<tab>:TYPE"), "{message}");
        let error = read_events("INFO  jepsen.util - 1\t:invoke\t:write\t[1\n").unwrap_err();
        assert!(error.to_string().contains("line 1"), "{error}");
        let error = read_events("{:process 0 :type :invoke :f :read}\n").unwrap_err();
        assert!(error.to_string().contains("--format edn"), "{error}");
    }
}
