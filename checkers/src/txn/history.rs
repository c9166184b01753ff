//! Transaction histories: events whose values are lists of micro-operations, in Elle's form
//! (`[["append", "x", 1], ["r", "y", [1, 2]]]` for list-append, `[["w", "x", 1], ["r", "x",
//! null]]` for rw-register).
//!
//! Unlike [`crate::history::History`], a transaction history keeps every event in file order:
//! the real-time order is read from where invocations and completions fall, and Elle's own
//! test histories hold completions with no invocation (a transaction whose start is not known
//! has no real-time predecessors). Keys and values are interned to integers once, so that the
//! inference passes work on flat arrays: a million transactions fit in a few hundred MB.

use std::collections::HashMap;

use crate::error::Error;
use crate::history::{Event, EventType, ProcessId, Value};

/// A micro-operation's function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MopF {
    /// `append`: add an element to the end of a list.
    Append,
    /// `r`: read a list (list-append) or a register (rw-register).
    Read,
    /// `w`: write a register.
    Write,
}

impl MopF {
    /// The name used in histories.
    pub fn name(self) -> &'static str {
        match self {
            MopF::Append => "append",
            MopF::Read => "r",
            MopF::Write => "w",
        }
    }
}

/// An interned value (a list element or a register value); [`NIL`] is the absent value.
pub type ValueId = u32;

/// The interned id of `nil`.
pub const NIL: ValueId = u32::MAX;

/// One micro-operation, interned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mop {
    /// What it does.
    pub f: MopF,
    /// The key, interned.
    pub key: u32,
    /// An append's element, a write's value, or a register read's value ([`NIL`] if none).
    pub value: ValueId,
    /// A list read's elements, as `start..start+len` in [`TxnHistory::elements`]; `None` for a
    /// `nil` read (nothing observed) and for everything but list reads.
    pub list: Option<(u32, u32)>,
}

/// How a transaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxnType {
    /// Committed, with the observed values.
    Ok,
    /// Certainly did not commit.
    Fail,
    /// Unknown: may have committed (its reads are not known).
    Info,
    /// Invoked but never completed; unknown like `Info`.
    Pending,
}

impl TxnType {
    /// The history's name for it (`info` for both unknown kinds).
    pub fn name(self) -> &'static str {
        match self {
            TxnType::Ok => "ok",
            TxnType::Fail => "fail",
            TxnType::Info | TxnType::Pending => "info",
        }
    }
}

/// One transaction: an invocation (if recorded) and its completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Txn {
    /// Position of its completion among the history's client events (of its invocation,
    /// if it never completed): Elle's `:index`, and the name reports use.
    pub index: u32,
    /// Position of its invocation, if the history has one.
    pub invoke_index: Option<u32>,
    /// The client process.
    pub process: u64,
    /// How it ended.
    pub kind: TxnType,
    /// Completion time (ns), if recorded.
    pub time: Option<u64>,
    /// Its micro-ops, as `start..end` in [`TxnHistory::mops`].
    pub mops: (u32, u32),
    /// The completion's line in the file (the invocation's if it never completed).
    pub line: usize,
}

/// A transaction history, interned.
#[derive(Clone, Debug, Default)]
pub struct TxnHistory {
    /// Transactions, ordered by [`Txn::index`].
    pub txns: Vec<Txn>,
    /// Every micro-op of every transaction, transaction by transaction.
    pub mops: Vec<Mop>,
    /// Elements of list reads, read by read.
    pub elements: Vec<ValueId>,
    /// Interned keys, by id.
    pub keys: Vec<Value>,
    /// Interned values, by id.
    pub values: Vec<Value>,
    /// Client events in order: `(txn, is_invocation)`, for real-time order.
    pub events: Vec<(u32, bool)>,
    /// Invocation micro-ops of transactions that have one (reads in them observe nothing),
    /// by transaction; Elle checks that no two invocations append one element to one key.
    pub invoke_mops: HashMap<u32, (u32, u32)>,
}

/// Which micro-ops a history may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MopSet {
    /// `append` and `r` (of lists).
    ListAppend,
    /// `w` and `r` (of registers).
    RwRegister,
}

/// Interns values to dense ids; integers and strings (all keys and elements in practice)
/// are looked up without building a `Value`.
#[derive(Default)]
struct Interner {
    ints: HashMap<i64, u32, ahash::RandomState>,
    strs: HashMap<Box<str>, u32, ahash::RandomState>,
    others: HashMap<Value, u32, ahash::RandomState>,
    values: Vec<Value>,
}

impl Interner {
    fn int(&mut self, n: i64) -> u32 {
        if let Some(&id) = self.ints.get(&n) {
            return id;
        }
        let id = self.values.len() as u32;
        self.values.push(Value::Int(n));
        self.ints.insert(n, id);
        id
    }

    fn str(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.strs.get(s) {
            return id;
        }
        let id = self.values.len() as u32;
        self.values.push(Value::Str(s.to_string()));
        self.strs.insert(s.into(), id);
        id
    }

    fn intern(&mut self, value: &Value) -> u32 {
        match value {
            Value::Int(n) => self.int(*n),
            Value::Str(s) => self.str(s),
            other => {
                if let Some(&id) = self.others.get(other) {
                    return id;
                }
                let id = self.values.len() as u32;
                self.values.push(other.clone());
                self.others.insert(other.clone(), id);
                id
            }
        }
    }
}

/// One client event, reduced to what the checker needs, its micro-ops already interned.
struct Raw {
    line: usize,
    index: Option<u64>,
    kind: EventType,
    process: u64,
    time: Option<u64>,
    /// `None` for a `nil` value (an info completion may carry none).
    mops: Option<Vec<Mop>>,
}

/// An invocation waiting for its completion: event position, line, micro-ops.
type Invocation = (u32, usize, Vec<Mop>);

/// Pairs events into transactions as they arrive.
#[derive(Default)]
struct Builder {
    h: TxnHistory,
    keys: Interner,
    values: Interner,
    // process -> invocations in flight. A process runs one transaction at a time, but Elle's
    // own histories sometimes invoke several on one process; like Elle, they pair first in,
    // first out.
    open: HashMap<u64, std::collections::VecDeque<Invocation>>,
    position: u32,
    // For each client event: its transaction (u32::MAX until known), and whether it is the
    // invocation.
    txn_of_event: Vec<(u32, bool)>,
    indexed: Vec<Option<u64>>,
}

impl Builder {
    fn push(&mut self, raw: Raw) {
        let at = self.position;
        self.position += 1;
        self.indexed.push(raw.index);
        let h = &mut self.h;
        if raw.kind == EventType::Invoke {
            self.open.entry(raw.process).or_default().push_back((
                at,
                raw.line,
                raw.mops.unwrap_or_default(),
            ));
            self.txn_of_event.push((u32::MAX, true));
            return;
        }
        let invocation = self.open.get_mut(&raw.process).and_then(|q| q.pop_front());
        let mops = match raw.mops {
            Some(m) if !(raw.kind == EventType::Info && m.is_empty()) => m,
            // An info completion without a value: the invocation's stands in.
            _ => invocation
                .as_ref()
                .map(|(_, _, m)| m.clone())
                .unwrap_or_default(),
        };
        let id = h.txns.len() as u32;
        let start = h.mops.len() as u32;
        h.mops.extend_from_slice(&mops);
        let end = h.mops.len() as u32;
        let kind = match raw.kind {
            EventType::Ok => TxnType::Ok,
            EventType::Fail => TxnType::Fail,
            _ => TxnType::Info,
        };
        let invoke_index = invocation.as_ref().map(|(p, _, _)| *p);
        if let Some((p, _, invoked)) = invocation {
            let istart = h.mops.len() as u32;
            h.mops.extend_from_slice(&invoked);
            h.invoke_mops.insert(id, (istart, h.mops.len() as u32));
            self.txn_of_event[p as usize].0 = id;
        }
        h.txns.push(Txn {
            index: at,
            invoke_index,
            process: raw.process,
            kind,
            time: raw.time,
            mops: (start, end),
            line: raw.line,
        });
        self.txn_of_event.push((id, false));
    }

    fn finish(mut self) -> TxnHistory {
        let h = &mut self.h;
        // Pending invocations: unknown outcome, never observed anything.
        let mut pending: Vec<(u64, Invocation)> = std::mem::take(&mut self.open)
            .into_iter()
            .flat_map(|(p, q)| q.into_iter().map(move |i| (p, i)))
            .collect();
        pending.sort_by_key(|(_, (at, _, _))| *at);
        for (process, (at, line, mops)) in pending {
            let id = h.txns.len() as u32;
            let start = h.mops.len() as u32;
            h.mops.extend_from_slice(&mops);
            let end = h.mops.len() as u32;
            h.invoke_mops.insert(id, (start, end));
            h.txns.push(Txn {
                index: at,
                invoke_index: Some(at),
                process,
                kind: TxnType::Pending,
                time: None,
                mops: (start, end),
                line,
            });
            self.txn_of_event[at as usize].0 = id;
        }
        // Elle names transactions by the history's own indices when it has them.
        if self.indexed.iter().all(Option::is_some) {
            for txn in &mut h.txns {
                // Indices past u32 keep the event's position rather than wrap.
                if let Some(Some(i)) = self.indexed.get(txn.index as usize)
                    && let Ok(i) = u32::try_from(*i)
                {
                    txn.index = i;
                }
                if let Some(Some(i)) = txn.invoke_index.and_then(|p| self.indexed.get(p as usize))
                    && let Ok(i) = u32::try_from(*i)
                {
                    txn.invoke_index = Some(i);
                }
            }
        }
        let mut h = std::mem::take(&mut self.h);
        h.events = self.txn_of_event;
        h.keys = self.keys.values;
        h.values = self.values.values;
        h
    }

    fn intern_mop(&mut self, m: &ParsedMop) -> Mop {
        let key = self.keys.intern(&m.key);
        match (&m.f, &m.value) {
            (MopF::Read, Value::List(items)) if m.list_read => {
                let start = self.h.elements.len() as u32;
                for item in items {
                    let id = self.values.intern(item);
                    self.h.elements.push(id);
                }
                Mop {
                    f: MopF::Read,
                    key,
                    value: NIL,
                    list: Some((start, items.len() as u32)),
                }
            }
            (f, Value::Nil) => Mop {
                f: *f,
                key,
                value: NIL,
                list: None,
            },
            (f, v) => Mop {
                f: *f,
                key,
                value: self.values.intern(v),
                list: None,
            },
        }
    }

    fn raw_from_event(&mut self, event: &Event, allowed: MopSet) -> Result<Option<Raw>, Error> {
        let ProcessId::Client(process) = event.process else {
            return Ok(None);
        };
        if event.f != "txn" {
            return Err(Error::History {
                line: event.line,
                message: format!(
                    "operation f={:?}: a transaction history holds only f=\"txn\" operations \
                     whose value is a list of micro-ops like [[\"append\", \"x\", 1], [\"r\", \
                     \"x\", [1]]]",
                    event.f
                ),
            });
        }
        let parsed = parse_mops(event, allowed)?;
        let mops = if event.value == Value::Nil {
            None
        } else {
            Some(parsed.iter().map(|m| self.intern_mop(m)).collect())
        };
        Ok(Some(Raw {
            line: event.line,
            index: event.index,
            kind: event.kind,
            process,
            time: event.time,
            mops,
        }))
    }
}

impl TxnHistory {
    /// The micro-ops of a transaction.
    pub fn mops_of(&self, txn: usize) -> &[Mop] {
        let (start, end) = self.txns[txn].mops;
        &self.mops[start as usize..end as usize]
    }

    /// The elements of a list read.
    pub fn list(&self, mop: &Mop) -> &[ValueId] {
        match mop.list {
            Some((start, len)) => &self.elements[start as usize..(start + len) as usize],
            None => &[],
        }
    }

    /// A key's value as written in the history.
    pub fn key(&self, key: u32) -> &Value {
        &self.keys[key as usize]
    }

    /// An interned value as written in the history (`nil` for [`NIL`]).
    pub fn value(&self, id: ValueId) -> Value {
        if id == NIL {
            Value::Nil
        } else {
            self.values[id as usize].clone()
        }
    }

    /// A micro-op as history text would show it: `[append x 1]`, `[r x [1 2]]`.
    pub fn mop_text(&self, mop: &Mop) -> String {
        let value = match (mop.f, mop.list) {
            (MopF::Read, Some(_)) => {
                Value::List(self.list(mop).iter().map(|&e| self.value(e)).collect())
            }
            (MopF::Read, None) if mop.value == NIL => Value::Nil,
            _ => self.value(mop.value),
        };
        format!("[{} {} {}]", mop.f.name(), self.key(mop.key), value)
    }

    /// A transaction as history text would show it.
    pub fn txn_text(&self, txn: usize) -> String {
        let mops: Vec<String> = self.mops_of(txn).iter().map(|m| self.mop_text(m)).collect();
        format!("{} [{}]", self.txns[txn].kind.name(), mops.join(" "))
    }

    /// Builds a transaction history from events in file order.
    ///
    /// Client events with `f` other than `txn` are refused (a transaction checker cannot read
    /// them), as is a value that is not a list of micro-ops of `allowed`. A completion with
    /// no invocation is a transaction of unknown start; an invocation that never completes is
    /// a pending transaction (it may have committed).
    pub fn from_events(events: &[Event], allowed: MopSet) -> Result<TxnHistory, Error> {
        let mut b = Builder::default();
        for event in events {
            if let Some(raw) = b.raw_from_event(event, allowed)? {
                b.push(raw);
            }
        }
        Ok(b.finish())
    }

    /// Builds a transaction history straight from JSON Lines text, as [`Self::from_events`]
    /// would from its events, without building them: each line's micro-ops are interned as
    /// they are parsed. A line the fast reader does not take (anything unusual) is read the
    /// general way, which also gives the error messages.
    pub fn from_jsonl(text: &str, allowed: MopSet) -> Result<TxnHistory, Error> {
        let mut b = Builder::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let elements = b.h.elements.len();
            let mut de = serde_json::Deserializer::from_str(line);
            let fast = serde::de::DeserializeSeed::deserialize(
                fast::LineSeed { b: &mut b, allowed },
                &mut de,
            )
            .ok()
            .filter(|_| de.end().is_ok());
            match fast {
                Some(fast::Line::Client(mut raw)) => {
                    raw.line = i + 1;
                    b.push(raw);
                }
                Some(fast::Line::Nemesis) => {}
                None => {
                    b.h.elements.truncate(elements);
                    let event = crate::formats::jsonl::parse_event(i + 1, line)?;
                    if let Some(raw) = b.raw_from_event(&event, allowed)? {
                        b.push(raw);
                    }
                }
            }
        }
        Ok(b.finish())
    }
}

#[derive(Clone, Debug)]
struct ParsedMop {
    f: MopF,
    key: Value,
    value: Value,
    list_read: bool,
}

fn parse_mops(event: &Event, allowed: MopSet) -> Result<Vec<ParsedMop>, Error> {
    let bad = |message: String| Error::History {
        line: event.line,
        message,
    };
    let items = match &event.value {
        Value::List(items) => items,
        // An info completion may carry no value; the invocation's stands in.
        Value::Nil if event.kind == EventType::Info => return Ok(Vec::new()),
        other => {
            return Err(bad(format!(
                "a transaction's value is a list of micro-ops like [[\"append\", \"x\", 1]], \
                 not {other}"
            )));
        }
    };
    let mut mops = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::List(parts) = item else {
            return Err(bad(format!(
                "micro-op {i} is {item}; expected [f key value]"
            )));
        };
        let [f, key, value] = parts.as_slice() else {
            return Err(bad(format!(
                "micro-op {i} is {item}; expected three parts [f key value]"
            )));
        };
        let f = match (f.as_str(), allowed) {
            (Some("append"), MopSet::ListAppend) => MopF::Append,
            (Some("r"), _) => MopF::Read,
            (Some("w"), MopSet::RwRegister) => MopF::Write,
            _ => {
                let expected = match allowed {
                    MopSet::ListAppend => "append or r (list-append)",
                    MopSet::RwRegister => "w or r (rw-register)",
                };
                return Err(bad(format!(
                    "micro-op {i} is {item}: its function must be {expected}; is --model right?"
                )));
            }
        };
        if matches!(key, Value::List(_) | Value::Nil) {
            return Err(bad(format!(
                "micro-op {i} is {item}: a key is a string or an integer"
            )));
        }
        let list_read = f == MopF::Read && allowed == MopSet::ListAppend;
        if list_read && !matches!(value, Value::List(_) | Value::Nil) {
            return Err(bad(format!(
                "micro-op {i} is {item}: a list-append read returns a list (or nil)"
            )));
        }
        if f == MopF::Append && matches!(value, Value::List(_) | Value::Nil) {
            return Err(bad(format!(
                "micro-op {i} is {item}: an append adds one element (an integer or a string)"
            )));
        }
        mops.push(ParsedMop {
            f,
            key: key.clone(),
            value: value.clone(),
            list_read,
        });
    }
    Ok(mops)
}

/// The fast JSON Lines reader: serde visitors that intern micro-ops as they read them.
mod fast {
    use std::fmt;

    use serde::Deserialize;
    use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

    use super::{Builder, EventType, Mop, MopF, MopSet, NIL, Raw};

    pub(super) enum Line {
        Client(Raw),
        Nemesis,
    }

    pub(super) struct LineSeed<'b> {
        pub(super) b: &'b mut Builder,
        pub(super) allowed: MopSet,
    }

    #[derive(Deserialize)]
    #[serde(field_identifier, rename_all = "lowercase")]
    enum Field {
        Index,
        Type,
        Process,
        Time,
        F,
        Value,
        #[serde(other)]
        Other,
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ProcessField {
        Client(u64),
        Named(String),
    }

    impl<'de> DeserializeSeed<'de> for LineSeed<'_> {
        type Value = Line;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Line, D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for LineSeed<'_> {
        type Value = Line;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an event object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Line, A::Error> {
            let mut index = None;
            let mut kind = None;
            let mut process = None;
            let mut time = None;
            let mut txn = false;
            let mut mops: Option<Option<Vec<Mop>>> = None;
            while let Some(field) = map.next_key::<Field>()? {
                match field {
                    Field::Index => index = Some(map.next_value::<u64>()?),
                    Field::Time => time = Some(map.next_value::<u64>()?),
                    Field::Type => {
                        let name: &str = map.next_value()?;
                        kind = Some(
                            EventType::from_name(name).ok_or_else(|| de::Error::custom("type"))?,
                        );
                    }
                    Field::Process => process = Some(map.next_value::<ProcessField>()?),
                    Field::F => {
                        let f: &str = map.next_value()?;
                        txn = f == "txn";
                    }
                    Field::Value => {
                        mops = Some(map.next_value_seed(MopsSeed {
                            b: &mut *self.b,
                            allowed: self.allowed,
                        })?)
                    }
                    Field::Other => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            match process {
                Some(ProcessField::Named(n)) if n == "nemesis" => Ok(Line::Nemesis),
                Some(ProcessField::Client(p)) if txn => {
                    let kind = kind.ok_or_else(|| de::Error::missing_field("type"))?;
                    // Only an info completion may carry no value; leave the rest to the
                    // general reader, which names the problem.
                    if kind != EventType::Info && !matches!(mops, Some(Some(_))) {
                        return Err(de::Error::custom("value"));
                    }
                    Ok(Line::Client(Raw {
                        line: 0,
                        index,
                        kind,
                        process: p,
                        time,
                        mops: mops.unwrap_or(None),
                    }))
                }
                _ => Err(de::Error::custom("not a plain transaction event")),
            }
        }
    }

    struct MopsSeed<'b> {
        b: &'b mut Builder,
        allowed: MopSet,
    }

    impl<'de> DeserializeSeed<'de> for MopsSeed<'_> {
        type Value = Option<Vec<Mop>>;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for MopsSeed<'_> {
        type Value = Option<Vec<Mop>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of micro-ops")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut mops = Vec::with_capacity(seq.size_hint().unwrap_or(4));
            while let Some(m) = seq.next_element_seed(MopSeed {
                b: &mut *self.b,
                allowed: self.allowed,
            })? {
                mops.push(m);
            }
            Ok(Some(mops))
        }
    }

    struct MopSeed<'b> {
        b: &'b mut Builder,
        allowed: MopSet,
    }

    impl<'de> DeserializeSeed<'de> for MopSeed<'_> {
        type Value = Mop;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Mop, D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for MopSeed<'_> {
        type Value = Mop;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("[f key value]")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Mop, A::Error> {
            let name: &str = seq.next_element()?.ok_or_else(|| de::Error::custom("f"))?;
            let f = match (name, self.allowed) {
                ("append", MopSet::ListAppend) => MopF::Append,
                ("r", _) => MopF::Read,
                ("w", MopSet::RwRegister) => MopF::Write,
                _ => return Err(de::Error::custom("f")),
            };
            let key = seq
                .next_element_seed(Atom {
                    b: &mut *self.b,
                    key: true,
                })?
                .flatten()
                .ok_or_else(|| de::Error::custom("key"))?;
            let mop = if f == MopF::Read && self.allowed == MopSet::ListAppend {
                let list = seq
                    .next_element_seed(ListSeed { b: &mut *self.b })?
                    .ok_or_else(|| de::Error::custom("value"))?;
                Mop {
                    f,
                    key,
                    value: NIL,
                    list,
                }
            } else {
                let value = seq
                    .next_element_seed(Atom {
                        b: &mut *self.b,
                        key: false,
                    })?
                    .ok_or_else(|| de::Error::custom("value"))?;
                // An append of nil is not an append; leave it to the slow reader's message.
                let value = match (f, value) {
                    (MopF::Append, None) => return Err(de::Error::custom("value")),
                    (_, v) => v.unwrap_or(NIL),
                };
                Mop {
                    f,
                    key,
                    value,
                    list: None,
                }
            };
            if seq.next_element::<IgnoredAny>()?.is_some() {
                return Err(de::Error::custom("extra"));
            }
            Ok(mop)
        }
    }

    /// An integer or string, interned as a key or a value; `None` for null.
    struct Atom<'b> {
        b: &'b mut Builder,
        key: bool,
    }

    impl Atom<'_> {
        fn interner(&mut self) -> &mut super::Interner {
            if self.key {
                &mut self.b.keys
            } else {
                &mut self.b.values
            }
        }
    }

    impl<'de> DeserializeSeed<'de> for Atom<'_> {
        type Value = Option<u32>;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<u32>, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Atom<'_> {
        type Value = Option<u32>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an integer or a string")
        }
        fn visit_i64<E: de::Error>(mut self, n: i64) -> Result<Option<u32>, E> {
            Ok(Some(self.interner().int(n)))
        }
        fn visit_u64<E: de::Error>(mut self, n: u64) -> Result<Option<u32>, E> {
            let n = i64::try_from(n).map_err(|_| E::custom("integer"))?;
            Ok(Some(self.interner().int(n)))
        }
        fn visit_str<E: de::Error>(mut self, s: &str) -> Result<Option<u32>, E> {
            Ok(Some(self.interner().str(s)))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<u32>, E> {
            if self.key {
                Err(E::custom("key"))
            } else {
                Ok(None)
            }
        }
    }

    /// A list read's elements, pushed straight into the arena; `None` for null.
    struct ListSeed<'b> {
        b: &'b mut Builder,
    }

    impl<'de> DeserializeSeed<'de> for ListSeed<'_> {
        type Value = Option<(u32, u32)>;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for ListSeed<'_> {
        type Value = Option<(u32, u32)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list or null")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let start = self.b.h.elements.len() as u32;
            while let Some(id) = seq.next_element_seed(Atom {
                b: &mut *self.b,
                key: false,
            })? {
                let id = id.ok_or_else(|| de::Error::custom("element"))?;
                self.b.h.elements.push(id);
            }
            Ok(Some((start, self.b.h.elements.len() as u32 - start)))
        }
    }
}
