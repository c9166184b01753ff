//! EDN histories, as written by Jepsen, Knossos and Porcupine's test data.
//!
//! Two layouts are read: one operation map per line (the usual `history.edn`), or a single
//! vector or list holding all the maps. The reader is a small hand-written parser for the part
//! of EDN such files use: `nil`, `true`/`false`, integers (with an optional `N`), strings with
//! escapes, characters, keywords, symbols, vectors, lists, maps, sets, `;` comments, `#_`
//! discards, and tagged literals (the tag is dropped, so Jepsen's `#jepsen.history.Op{...}`
//! records read as maps). Floats are rejected: no model gives them a meaning.
//!
//! Fields: `:process` (integer or `:nemesis`), `:type` (`:invoke`, `:ok`, `:fail`, `:info`), `:f`,
//! `:value`, and optional `:key`, `:time`, `:index`; others are ignored. Keyword values read as
//! their name (`:foo` is the string `"foo"`), sets as sorted lists, maps as sorted lists of
//! `[key value]` pairs.
//!
//! [`write_events`] writes the one-map-per-line layout so that our histories can be given to
//! Knossos for a second opinion. Errors name the line and column.

use crate::error::Error;
use crate::history::{Event, EventType, ProcessId, Value};

/// Nesting deeper than this is rejected instead of risking the stack on hostile input.
const NESTING_DEPTH_MAX: usize = 128;

/// An EDN value as parsed, before it is read as an event.
#[derive(Clone, Debug, PartialEq)]
enum Edn {
    Nil,
    Bool(bool),
    Int(i64),
    Str(String),
    Keyword(String),
    Symbol(String),
    Vector(Vec<Form>),
    List(Vec<Form>),
    Map(Vec<(Form, Form)>),
    Set(Vec<Form>),
}

/// An EDN value with the position where it starts.
#[derive(Clone, Debug, PartialEq)]
struct Form {
    line: usize,
    column: usize,
    edn: Edn,
}

struct Parser<'a> {
    text: &'a [u8],
    position: usize,
    line: usize,
    column: usize,
}

fn is_symbol_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || b >= 0x80
        || matches!(
            b,
            b'.' | b'*'
                | b'+'
                | b'!'
                | b'-'
                | b'_'
                | b'?'
                | b'$'
                | b'%'
                | b'&'
                | b'='
                | b'<'
                | b'>'
                | b'/'
                | b'\''
                | b'#'
                | b':'
        )
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Parser<'a> {
        Parser {
            text: text.as_bytes(),
            position: 0,
            line: 1,
            column: 1,
        }
    }

    fn error(&self, line: usize, column: usize, message: impl Into<String>) -> Error {
        Error::Syntax {
            line,
            column: Some(column),
            message: message.into(),
        }
    }

    fn here(&self, message: impl Into<String>) -> Error {
        self.error(self.line, self.column, message)
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.position).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<u8> {
        self.text.get(self.position + ahead).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.position += 1;
        if b == b'\n' {
            self.line += 1;
            self.column = 1;
        } else if b & 0xC0 != 0x80 {
            // Columns count characters, not UTF-8 continuation bytes.
            self.column += 1;
        }
        Some(b)
    }

    fn skip_blank(&mut self) {
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' | b'\n' | b'\r' | b',' => {
                    self.bump();
                }
                b';' => {
                    while let Some(c) = self.peek() {
                        if c == b'\n' {
                            break;
                        }
                        self.bump();
                    }
                }
                _ => break,
            }
        }
    }

    /// Skips blanks, comments and `#_`-discarded forms.
    fn skip_ignored(&mut self, depth: usize) -> Result<(), Error> {
        loop {
            self.skip_blank();
            if self.peek() == Some(b'#') && self.peek_at(1) == Some(b'_') {
                let (line, column) = (self.line, self.column);
                self.bump();
                self.bump();
                if self.next_form(depth + 1)?.is_none() {
                    return Err(self.error(
                        line,
                        column,
                        "#_ must be followed by a form to discard",
                    ));
                }
                continue;
            }
            return Ok(());
        }
    }

    /// Parses the next form; `Ok(None)` at the end of input.
    fn next_form(&mut self, depth: usize) -> Result<Option<Form>, Error> {
        if depth > NESTING_DEPTH_MAX {
            return Err(self.here(format!(
                "nesting deeper than {NESTING_DEPTH_MAX} levels is not supported"
            )));
        }
        self.skip_ignored(depth)?;
        let (line, column) = (self.line, self.column);
        let Some(b) = self.peek() else {
            return Ok(None);
        };
        let edn = match b {
            b'(' => {
                self.bump();
                Edn::List(self.sequence(b')', depth, line, column)?)
            }
            b'[' => {
                self.bump();
                Edn::Vector(self.sequence(b']', depth, line, column)?)
            }
            b'{' => {
                self.bump();
                let items = self.sequence(b'}', depth, line, column)?;
                if items.len() % 2 != 0 {
                    return Err(self.error(line, column, "a map needs an even number of forms"));
                }
                let mut pairs = Vec::with_capacity(items.len() / 2);
                let mut items = items.into_iter();
                while let (Some(k), Some(v)) = (items.next(), items.next()) {
                    pairs.push((k, v));
                }
                Edn::Map(pairs)
            }
            b'#' if self.peek_at(1) == Some(b'{') => {
                self.bump();
                self.bump();
                Edn::Set(self.sequence(b'}', depth, line, column)?)
            }
            b'#' => {
                // A tagged literal: drop the tag, keep the form (records read as maps).
                self.bump();
                let tag = self.symbol_text();
                if tag.is_empty() {
                    return Err(self.error(line, column, "unsupported dispatch after '#'"));
                }
                match self.next_form(depth + 1)? {
                    Some(form) => {
                        return Ok(Some(Form {
                            line,
                            column,
                            ..form
                        }));
                    }
                    None => return Err(self.error(line, column, "tag without a form")),
                }
            }
            b')' | b']' | b'}' => {
                return Err(self.here(format!("unexpected '{}'", b as char)));
            }
            b'"' => Edn::Str(self.string()?),
            b'\\' => Edn::Str(self.character()?),
            b':' => {
                self.bump();
                let name = self.symbol_text();
                if name.is_empty() {
                    return Err(self.error(line, column, "a keyword needs a name after ':'"));
                }
                Edn::Keyword(name)
            }
            b'0'..=b'9' => self.number(line, column)?,
            b'+' | b'-' if self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) => {
                self.number(line, column)?
            }
            _ if is_symbol_byte(b) => match self.symbol_text().as_str() {
                "nil" => Edn::Nil,
                "true" => Edn::Bool(true),
                "false" => Edn::Bool(false),
                other => Edn::Symbol(other.to_string()),
            },
            _ => {
                return Err(self.here(format!("unexpected character {:?}", self.char_here())));
            }
        };
        Ok(Some(Form { line, column, edn }))
    }

    fn char_here(&self) -> char {
        std::str::from_utf8(&self.text[self.position..])
            .ok()
            .and_then(|s| s.chars().next())
            .unwrap_or('\u{fffd}')
    }

    fn sequence(
        &mut self,
        close: u8,
        depth: usize,
        line: usize,
        column: usize,
    ) -> Result<Vec<Form>, Error> {
        let mut items = Vec::new();
        loop {
            self.skip_ignored(depth)?;
            match self.peek() {
                None => {
                    return Err(self.error(
                        line,
                        column,
                        format!("unclosed collection: expected '{}'", close as char),
                    ));
                }
                Some(b) if b == close => {
                    self.bump();
                    return Ok(items);
                }
                Some(_) => match self.next_form(depth + 1)? {
                    Some(form) => items.push(form),
                    None => {
                        return Err(self.error(line, column, "unclosed collection"));
                    }
                },
            }
        }
    }

    fn symbol_text(&mut self) -> String {
        let start = self.position;
        while self.peek().is_some_and(is_symbol_byte) {
            self.bump();
        }
        String::from_utf8_lossy(&self.text[start..self.position]).into_owned()
    }

    fn number(&mut self, line: usize, column: usize) -> Result<Edn, Error> {
        let text = self.symbol_text();
        let digits = text.strip_suffix('N').unwrap_or(&text);
        let digits = digits.strip_prefix('+').unwrap_or(digits);
        match digits.parse::<i64>() {
            Ok(n) => Ok(Edn::Int(n)),
            Err(_) if text.contains(['.', 'e', 'E', 'M']) => Err(self.error(
                line,
                column,
                format!("floats are not supported; got {text}"),
            )),
            Err(e) => Err(self.error(line, column, format!("not a 64-bit integer: {text} ({e})"))),
        }
    }

    fn string(&mut self) -> Result<String, Error> {
        let (line, column) = (self.line, self.column);
        self.bump(); // opening quote
        let mut bytes = Vec::new();
        loop {
            let Some(b) = self.bump() else {
                return Err(self.error(line, column, "unterminated string"));
            };
            match b {
                b'"' => break,
                b'\\' => {
                    let (el, ec) = (self.line, self.column);
                    let escaped = match self.bump() {
                        Some(b'n') => '\n',
                        Some(b't') => '\t',
                        Some(b'r') => '\r',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'\\') => '\\',
                        Some(b'"') => '"',
                        Some(b'u') => {
                            let mut code = 0u32;
                            for _ in 0..4 {
                                let digit = self
                                    .bump()
                                    .and_then(|h| (h as char).to_digit(16))
                                    .ok_or_else(|| {
                                        self.error(el, ec, "\\u needs four hex digits")
                                    })?;
                                code = code * 16 + digit;
                            }
                            char::from_u32(code).ok_or_else(|| {
                                self.error(el, ec, format!("\\u{code:04x} is not a character"))
                            })?
                        }
                        Some(other) => {
                            return Err(self.error(
                                el,
                                ec,
                                format!("unknown escape \\{}", other as char),
                            ));
                        }
                        None => return Err(self.error(line, column, "unterminated string")),
                    };
                    let mut buf = [0u8; 4];
                    bytes.extend_from_slice(escaped.encode_utf8(&mut buf).as_bytes());
                }
                other => bytes.push(other),
            }
        }
        String::from_utf8(bytes).map_err(|_| self.error(line, column, "string is not UTF-8"))
    }

    fn character(&mut self) -> Result<String, Error> {
        let (line, column) = (self.line, self.column);
        self.bump(); // backslash
        let first = self.char_here();
        let name = self.symbol_text();
        let c = match name.as_str() {
            "newline" => '\n',
            "space" => ' ',
            "tab" => '\t',
            "return" => '\r',
            "" => {
                // A punctuation character such as \( or \,
                if self.peek().is_none() {
                    return Err(self.error(line, column, "character literal without a character"));
                }
                for _ in 0..first.len_utf8() {
                    self.bump();
                }
                first
            }
            one if one.chars().count() == 1 => first,
            other => {
                return Err(self.error(line, column, format!("unknown character \\{other}")));
            }
        };
        Ok(c.to_string())
    }
}

/// Reads every event of an EDN history (one map per line, or one collection of maps).
pub fn read_events(text: &str) -> Result<Vec<Event>, Error> {
    let mut parser = Parser::new(text);
    let mut forms = Vec::new();
    while let Some(form) = parser.next_form(0)? {
        forms.push(form);
    }
    if forms.len() == 1 && matches!(forms[0].edn, Edn::Vector(_) | Edn::List(_)) {
        let Some(Form {
            edn: Edn::Vector(items) | Edn::List(items),
            ..
        }) = forms.pop()
        else {
            unreachable!("matched above");
        };
        forms = items;
    }
    forms.iter().map(event_from_form).collect()
}

fn form_error(form: &Form, message: String) -> Error {
    Error::Syntax {
        line: form.line,
        column: Some(form.column),
        message,
    }
}

fn describe(edn: &Edn) -> String {
    match edn {
        Edn::Nil => "nil".into(),
        Edn::Bool(b) => b.to_string(),
        Edn::Int(n) => n.to_string(),
        Edn::Str(s) => format!("{s:?}"),
        Edn::Keyword(k) => format!(":{k}"),
        Edn::Symbol(s) => s.clone(),
        Edn::Vector(_) => "a vector".into(),
        Edn::List(_) => "a list".into(),
        Edn::Map(_) => "a map".into(),
        Edn::Set(_) => "a set".into(),
    }
}

fn event_from_form(form: &Form) -> Result<Event, Error> {
    let Edn::Map(pairs) = &form.edn else {
        return Err(form_error(
            form,
            format!("an operation must be a map; got {}", describe(&form.edn)),
        ));
    };
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| matches!(&k.edn, Edn::Keyword(kw) if kw == name))
            .map(|(_, v)| v)
    };
    let missing = |name: &str| form_error(form, format!("missing :{name}"));
    let type_form = get("type").ok_or_else(|| missing("type"))?;
    let kind = match &type_form.edn {
        Edn::Keyword(k) => EventType::from_name(k),
        _ => None,
    }
    .ok_or_else(|| {
        form_error(
            type_form,
            format!(
                ":type must be one of :invoke, :ok, :fail, :info; got {}",
                describe(&type_form.edn)
            ),
        )
    })?;
    let process_form = get("process").ok_or_else(|| missing("process"))?;
    let process = match &process_form.edn {
        Edn::Int(n) if *n >= 0 => ProcessId::Client(*n as u64),
        Edn::Keyword(k) if k == "nemesis" => ProcessId::Nemesis,
        other => {
            return Err(form_error(
                process_form,
                format!(
                    ":process must be a non-negative integer or :nemesis; got {}",
                    describe(other)
                ),
            ));
        }
    };
    let f_form = get("f").ok_or_else(|| missing("f"))?;
    let f = match &f_form.edn {
        Edn::Keyword(s) | Edn::Symbol(s) | Edn::Str(s) => s.clone(),
        other => {
            return Err(form_error(
                f_form,
                format!(":f must be a keyword; got {}", describe(other)),
            ));
        }
    };
    let key = match get("key") {
        None => None,
        Some(k) => match &k.edn {
            Edn::Nil => None,
            Edn::Str(s) | Edn::Keyword(s) | Edn::Symbol(s) => Some(s.clone()),
            Edn::Int(n) => Some(n.to_string()),
            other => {
                return Err(form_error(
                    k,
                    format!(
                        ":key must be a string, keyword or integer; got {}",
                        describe(other)
                    ),
                ));
            }
        },
    };
    let index = optional_u64(get("index"), "index")?;
    let time = optional_u64(get("time"), "time")?;
    let value = match get("value") {
        None => Value::Nil,
        Some(v) => to_value(v)?,
    };
    Ok(Event {
        line: form.line,
        index,
        kind,
        process,
        time,
        f,
        key,
        value,
        not_applied: false,
    })
}

fn optional_u64(form: Option<&Form>, name: &str) -> Result<Option<u64>, Error> {
    match form {
        None => Ok(None),
        Some(Form { edn: Edn::Nil, .. }) => Ok(None),
        Some(Form {
            edn: Edn::Int(n), ..
        }) if *n >= 0 => Ok(Some(*n as u64)),
        Some(other) => Err(form_error(
            other,
            format!(
                ":{name} must be a non-negative integer; got {}",
                describe(&other.edn)
            ),
        )),
    }
}

fn to_value(form: &Form) -> Result<Value, Error> {
    Ok(match &form.edn {
        Edn::Nil => Value::Nil,
        Edn::Int(n) => Value::Int(*n),
        Edn::Str(s) | Edn::Keyword(s) | Edn::Symbol(s) => Value::Str(s.clone()),
        Edn::Vector(items) | Edn::List(items) => {
            Value::List(items.iter().map(to_value).collect::<Result<_, _>>()?)
        }
        Edn::Set(items) => {
            let mut values = items.iter().map(to_value).collect::<Result<Vec<_>, _>>()?;
            values.sort();
            values.dedup();
            Value::List(values)
        }
        // Jepsen's bank workload reads balances as {account balance} and transfers as
        // {:from :to :amount}: a map reads as its [key value] pairs, sorted by key.
        Edn::Map(entries) => {
            let mut pairs = entries
                .iter()
                .map(|(k, v)| Ok(Value::List(vec![to_value(k)?, to_value(v)?])))
                .collect::<Result<Vec<_>, Error>>()?;
            pairs.sort();
            Value::List(pairs)
        }
        Edn::Bool(_) => {
            return Err(form_error(
                form,
                format!(
                    ":value may be nil, an integer, a string, a keyword or a collection of \
                     those; got {}",
                    describe(&form.edn)
                ),
            ));
        }
    })
}

/// Whether `name` can be written as a keyword and read back as the same name.
fn is_keyword_name(name: &str) -> bool {
    !name.is_empty()
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii() && is_symbol_byte(b))
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Nil => out.push_str("nil"),
        Value::Int(n) => out.push_str(&n.to_string()),
        Value::Str(s) => write_string(s, out),
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_value(item, out);
            }
            out.push(']');
        }
    }
}

/// Writes events one map per line, the layout Knossos and Jepsen read.
pub fn write_events(events: &[Event], out: &mut impl std::io::Write) -> std::io::Result<()> {
    let mut line = String::new();
    for event in events {
        line.clear();
        line.push('{');
        if let Some(index) = event.index {
            line.push_str(&format!(":index {index}, "));
        }
        line.push_str(":type :");
        line.push_str(event.kind.name());
        line.push_str(", :process ");
        match event.process {
            ProcessId::Client(p) => line.push_str(&p.to_string()),
            ProcessId::Nemesis => line.push_str(":nemesis"),
        }
        line.push_str(", :f ");
        if is_keyword_name(&event.f) {
            line.push(':');
            line.push_str(&event.f);
        } else {
            write_string(&event.f, &mut line);
        }
        if let Some(key) = &event.key {
            line.push_str(", :key ");
            write_string(key, &mut line);
        }
        line.push_str(", :value ");
        write_value(&event.value, &mut line);
        if let Some(time) = event.time {
            line.push_str(&format!(", :time {time}"));
        }
        line.push('}');
        writeln!(out, "{line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_porcupine_lines() {
        let text = "{:process 0, :type :invoke, :f :append, :key \"0\", :value \"x 0 0 y\"}\n\
                    {:process 0, :type :ok, :f :get, :key \"0\", :value nil}\n";
        let events = read_events(text).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].f, "append");
        assert_eq!(events[0].value, Value::Str("x 0 0 y".into()));
        assert_eq!(events[1].line, 2);
        assert_eq!(events[1].kind, EventType::Ok);
    }

    #[test]
    fn reads_a_vector_of_jepsen_records() {
        let text = "[#jepsen.history.Op{:index 0 :time 5 :type :invoke :process 1 :f :cas \
                    :value [1 2]} ; comment\n {:type :info :process :nemesis :f :start \
                    :value #{3 1 2} #_ :ignored #_ 7}]";
        let events = read_events(text).unwrap();
        assert_eq!(events[0].time, Some(5));
        assert_eq!(
            events[0].value,
            Value::List(vec![Value::Int(1), Value::Int(2)])
        );
        assert_eq!(events[1].process, ProcessId::Nemesis);
        assert_eq!(
            events[1].value,
            Value::List(vec![Value::Int(1), Value::Int(2), Value::Int(3)])
        );
    }

    #[test]
    fn strings_with_escapes() {
        let events =
            read_events(r#"{:type :ok :process 2 :f :read :value "a\"b\\c\n\u00e9"}"#).unwrap();
        assert_eq!(events[0].value, Value::Str("a\"b\\c\né".into()));
    }

    #[test]
    fn errors_name_line_and_column() {
        let err =
            read_events("{:type :ok :process 1 :f :read}\n  {:type :okay :process 1 :f :read}")
                .unwrap_err()
                .to_string();
        assert!(err.starts_with("line 2, column 10:"), "{err}");
        let err = read_events("{:type :ok\n :process 1 :f :read :value 1.5}")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("line 2, column 29: floats"), "{err}");
        let err = read_events("{:type :ok").unwrap_err().to_string();
        assert!(err.contains("unclosed"), "{err}");
        let err = read_events("\"abc").unwrap_err().to_string();
        assert!(err.contains("unterminated string"), "{err}");
        let deep = "[".repeat(1000);
        assert!(read_events(&deep).is_err());
        let discards = "#_ ".repeat(100_000);
        assert!(read_events(&discards).is_err());
        assert!(read_events("{:a}").is_err());
        assert!(read_events(")").is_err());
    }

    #[test]
    fn write_then_read_round_trips() {
        let text = "{:index 0, :type :invoke, :process 3, :f :cas, :key \"k \\\"1\\\"\", \
                    :value [1 \"a\" nil], :time 7}\n{:type :info, :process :nemesis, :f \
                    \"odd name\", :value nil}";
        let events = read_events(text).unwrap();
        let mut out = Vec::new();
        write_events(&events, &mut out).unwrap();
        let again = read_events(std::str::from_utf8(&out).unwrap()).unwrap();
        let strip = |es: Vec<Event>| -> Vec<Event> {
            es.into_iter().map(|e| Event { line: 0, ..e }).collect()
        };
        assert_eq!(strip(events), strip(again));
    }
}
