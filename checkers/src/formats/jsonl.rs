//! Faultline's JSON Lines history format: one event per line.
//!
//! ```text
//! {"index":0,"type":"invoke","process":3,"time":123,"f":"cas","key":"k1","value":[1,2]}
//! {"index":1,"type":"ok","process":3,"time":456,"f":"cas","key":"k1","value":[1,2]}
//! {"index":2,"type":"info","process":"nemesis","time":500,"f":"kill","value":"n1"}
//! ```
//!
//! `type`, `process` and `f` are required; `index`, `time`, `key` and `value` are optional
//! (`value` defaults to null). Unknown fields are ignored so that recorders can add fields
//! without breaking older checkers. Blank lines are skipped. Values are null, integers, strings
//! and arrays of values; booleans, floats and objects are rejected with the line named, because
//! no model here gives them a meaning and silently coercing them could change a verdict.

use serde_json::Value as Json;

use crate::error::Error;
use crate::history::{Event, EventType, ProcessId, Value};

/// Reads every event of a JSON Lines history.
pub fn read_events(text: &str) -> Result<Vec<Event>, Error> {
    let mut events = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        events.push(parse_event(line, raw)?);
    }
    Ok(events)
}

/// Writes events as JSON Lines, the inverse of [`read_events`].
pub fn write_events(events: &[Event], out: &mut impl std::io::Write) -> std::io::Result<()> {
    for event in events {
        let mut object = serde_json::Map::new();
        if let Some(index) = event.index {
            object.insert("index".into(), index.into());
        }
        object.insert("type".into(), event.kind.name().into());
        let process = match event.process {
            ProcessId::Client(p) => Json::from(p),
            ProcessId::Nemesis => Json::from("nemesis"),
        };
        object.insert("process".into(), process);
        if let Some(time) = event.time {
            object.insert("time".into(), time.into());
        }
        object.insert("f".into(), event.f.clone().into());
        if let Some(key) = &event.key {
            object.insert("key".into(), key.clone().into());
        }
        object.insert("value".into(), to_json(&event.value));
        if event.not_applied {
            object.insert("not_applied".into(), true.into());
        }
        writeln!(out, "{}", Json::Object(object))?;
    }
    Ok(())
}

fn syntax(line: usize, message: String) -> Error {
    Error::Syntax {
        line,
        column: None,
        message,
    }
}

pub(crate) fn parse_event(line: usize, raw: &str) -> Result<Event, Error> {
    let json: Json = serde_json::from_str(raw).map_err(|e| {
        syntax(
            line,
            format!("not valid JSON at column {}: {e}", e.column()),
        )
    })?;
    let Json::Object(object) = json else {
        return Err(syntax(line, "an event must be a JSON object".into()));
    };
    let kind_name = match object.get("type") {
        Some(Json::String(s)) => s.as_str(),
        Some(other) => {
            return Err(syntax(
                line,
                format!("field \"type\" must be a string; got {other}"),
            ));
        }
        None => return Err(syntax(line, "missing field \"type\"".into())),
    };
    let kind = EventType::from_name(kind_name).ok_or_else(|| {
        syntax(
            line,
            format!("field \"type\" must be one of invoke, ok, fail, info; got {kind_name:?}"),
        )
    })?;
    let process = match object.get("process") {
        Some(Json::String(s)) if s == "nemesis" => ProcessId::Nemesis,
        Some(Json::Number(n)) if n.as_u64().is_some() => {
            ProcessId::Client(n.as_u64().expect("checked by the guard"))
        }
        Some(other) => {
            return Err(syntax(
                line,
                format!(
                    "field \"process\" must be a non-negative integer or \"nemesis\"; got {other}"
                ),
            ));
        }
        None => return Err(syntax(line, "missing field \"process\"".into())),
    };
    let f = match object.get("f") {
        Some(Json::String(s)) => s.clone(),
        Some(other) => {
            return Err(syntax(
                line,
                format!("field \"f\" must be a string; got {other}"),
            ));
        }
        None => return Err(syntax(line, "missing field \"f\"".into())),
    };
    let index = optional_u64(line, &object, "index")?;
    let time = optional_u64(line, &object, "time")?;
    let key = match object.get("key") {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(s.clone()),
        // Integer keys are common in generated workloads; they name the same key as their text.
        Some(Json::Number(n)) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        Some(other) => {
            return Err(syntax(
                line,
                format!("field \"key\" must be a string or an integer; got {other}"),
            ));
        }
    };
    let value = match object.get("value") {
        None => Value::Nil,
        Some(v) => from_json(v).map_err(|m| syntax(line, format!("field \"value\": {m}")))?,
    };
    let not_applied = match object.get("not_applied") {
        None | Some(Json::Null) => false,
        Some(Json::Bool(b)) => *b,
        Some(other) => {
            return Err(syntax(
                line,
                format!("field \"not_applied\" must be true or false; got {other}"),
            ));
        }
    };
    Ok(Event {
        line,
        index,
        kind,
        process,
        time,
        f,
        key,
        value,
        not_applied,
    })
}

fn optional_u64(
    line: usize,
    object: &serde_json::Map<String, Json>,
    field: &str,
) -> Result<Option<u64>, Error> {
    match object.get(field) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(other) => Err(syntax(
            line,
            format!("field {field:?} must be a non-negative integer; got {other}"),
        )),
    }
}

/// Converts a JSON value to a history value, or says why it cannot.
pub fn from_json(json: &Json) -> Result<Value, String> {
    match json {
        Json::Null => Ok(Value::Nil),
        Json::Number(n) => n
            .as_i64()
            .map(Value::Int)
            .ok_or_else(|| format!("only 64-bit signed integers are supported; got {n}")),
        Json::String(s) => Ok(Value::Str(s.clone())),
        Json::Array(items) => items
            .iter()
            .map(from_json)
            .collect::<Result<_, _>>()
            .map(Value::List),
        Json::Bool(b) => Err(format!("booleans are not supported as values; got {b}")),
        Json::Object(_) => Err("objects are not supported as values".into()),
    }
}

/// Converts a history value to JSON.
pub fn to_json(value: &Value) -> Json {
    match value {
        Value::Nil => Json::Null,
        Value::Int(n) => Json::from(*n),
        Value::Str(s) => Json::from(s.as_str()),
        Value::List(items) => Json::Array(items.iter().map(to_json).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_cas_and_a_nemesis_event() {
        let text = r#"{"index":0,"type":"invoke","process":3,"time":123,"f":"cas","key":"k1","value":[1,2]}

{"index":1,"type":"info","process":"nemesis","time":124,"f":"kill","value":"n1"}"#;
        let events = read_events(text).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[0].value,
            Value::List(vec![Value::Int(1), Value::Int(2)])
        );
        assert_eq!(events[0].key.as_deref(), Some("k1"));
        assert_eq!(events[1].process, ProcessId::Nemesis);
        assert_eq!(events[1].line, 3);
    }

    #[test]
    fn bad_type_names_line_and_choices() {
        let text = "{\"type\":\"invoke\",\"process\":1,\"f\":\"read\"}\n{\"type\":\"okay\",\"process\":1,\"f\":\"read\"}";
        let err = read_events(text).unwrap_err().to_string();
        assert_eq!(
            err,
            "line 2: field \"type\" must be one of invoke, ok, fail, info; got \"okay\""
        );
    }

    #[test]
    fn bad_json_and_bad_values_are_errors() {
        assert!(
            read_events("{")
                .unwrap_err()
                .to_string()
                .starts_with("line 1: not valid JSON")
        );
        let err = read_events(r#"{"type":"ok","process":1,"f":"read","value":1.5}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("64-bit signed integers"), "{err}");
        let err = read_events(r#"{"type":"ok","process":-1,"f":"read"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"process\""), "{err}");
    }

    #[test]
    fn write_then_read_round_trips() {
        let text = r#"{"index":0,"type":"invoke","process":3,"time":123,"f":"cas","key":"k1","value":[1,"a",null]}"#;
        let events = read_events(text).unwrap();
        let mut out = Vec::new();
        write_events(&events, &mut out).unwrap();
        let again = read_events(std::str::from_utf8(&out).unwrap()).unwrap();
        assert_eq!(events, again);
    }
}
