//! Splits a list response (`{"kind": ..., "metadata": {...}, "items": [{...}, ...]}`)
//! into its items as the bytes arrive, so that a page is never held whole: memory
//! follows the largest object, not the page. The other top-level members (the
//! list's `metadata` with its `resourceVersion` and `continue`) are kept; they are
//! small, and may come before or after the items.

use serde_json::Value;

/// The top-level members of a list other than its items.
#[derive(Debug, Default)]
pub struct ListHead {
    pub members: serde_json::Map<String, Value>,
}

impl ListHead {
    pub fn resource_version(&self) -> Option<&str> {
        self.members
            .get("metadata")?
            .get("resourceVersion")?
            .as_str()
    }

    /// The continue token, if more pages follow.
    pub fn continue_token(&self) -> Option<&str> {
        self.members
            .get("metadata")?
            .get("continue")?
            .as_str()
            .filter(|c| !c.is_empty())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Before the opening `{`.
    Open,
    /// Before a member's key (or `}`).
    Key,
    /// Inside a key's string.
    InKey { escaped: bool },
    /// Between a key and its `:`.
    Colon,
    /// Before the `[` of the items (or `null`).
    ItemsOpen,
    /// Before an item, a `,` or the `]`.
    ItemStart,
    /// Inside an item.
    Item,
    /// Inside the value of another member.
    Value,
    /// After the closing `}`.
    Done,
}

/// Tracks where a JSON value ends: strings, escapes, nesting.
#[derive(Debug, Default, Clone, Copy)]
struct Scan {
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// A number, `true`, `false` or `null`: it ends at the next delimiter.
    scalar: bool,
}

/// Why a list response cannot be split.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum SplitError {
    #[error("the list response is not JSON as expected: {0}")]
    Syntax(String),
    #[error("an object in the list is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the list response ended early")]
    Truncated,
}

pub struct ListSplitter {
    phase: Phase,
    scan: Scan,
    key: Vec<u8>,
    buf: Vec<u8>,
    head: ListHead,
    max_item: usize,
}

/// The largest value kept for a member other than `items`.
const MAX_MEMBER: usize = 1 << 20;

impl ListSplitter {
    /// `max_item`: the largest object accepted, in bytes.
    pub fn new(max_item: usize) -> ListSplitter {
        ListSplitter {
            phase: Phase::Open,
            scan: Scan::default(),
            key: Vec::new(),
            buf: Vec::new(),
            head: ListHead::default(),
            max_item,
        }
    }

    /// Feeds the next bytes; `item` is called with the bytes of each whole item.
    pub fn feed<E: From<SplitError>>(
        &mut self,
        mut data: &[u8],
        item: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        while !data.is_empty() {
            let b = data[0];
            match self.phase {
                Phase::Open | Phase::Key | Phase::Colon | Phase::ItemsOpen | Phase::ItemStart
                    if b.is_ascii_whitespace() =>
                {
                    data = &data[1..];
                }
                Phase::Open => {
                    expect(b, b'{')?;
                    self.phase = Phase::Key;
                    data = &data[1..];
                }
                Phase::Key => {
                    match b {
                        b',' => {}
                        b'}' => self.phase = Phase::Done,
                        b'"' => {
                            self.key.clear();
                            self.phase = Phase::InKey { escaped: false };
                        }
                        other => return Err(syntax(other, "a member name").into()),
                    }
                    data = &data[1..];
                }
                Phase::InKey { escaped } => {
                    if escaped {
                        self.key.push(b);
                        self.phase = Phase::InKey { escaped: false };
                    } else if b == b'\\' {
                        self.key.push(b);
                        self.phase = Phase::InKey { escaped: true };
                    } else if b == b'"' {
                        self.phase = Phase::Colon;
                    } else {
                        if self.key.len() > 256 {
                            return Err(
                                SplitError::Syntax("a member name is too long".into()).into()
                            );
                        }
                        self.key.push(b);
                    }
                    data = &data[1..];
                }
                Phase::Colon => {
                    expect(b, b':')?;
                    self.phase = if self.key == b"items" {
                        Phase::ItemsOpen
                    } else {
                        self.buf.clear();
                        self.scan = Scan::default();
                        Phase::Value
                    };
                    data = &data[1..];
                }
                Phase::ItemsOpen => {
                    if b == b'[' {
                        self.phase = Phase::ItemStart;
                        data = &data[1..];
                    } else {
                        // `"items": null`: an empty list.
                        self.buf.clear();
                        self.scan = Scan::default();
                        self.key = b"(items)".to_vec();
                        self.phase = Phase::Value;
                    }
                }
                Phase::ItemStart => {
                    match b {
                        b',' => {}
                        b']' => self.phase = Phase::Key,
                        b'{' => {
                            self.buf.clear();
                            self.scan = Scan::default();
                            self.phase = Phase::Item;
                            continue;
                        }
                        other => return Err(syntax(other, "an object in `items`").into()),
                    }
                    data = &data[1..];
                }
                Phase::Item => {
                    let (used, done) = self.scan.advance(data, &mut self.buf);
                    data = &data[used..];
                    if self.buf.len() > self.max_item {
                        return Err(SplitError::TooLarge(self.max_item).into());
                    }
                    if done {
                        item(&self.buf)?;
                        self.buf.clear();
                        self.phase = Phase::ItemStart;
                    }
                }
                Phase::Value => {
                    let (used, done) = self.scan.advance(data, &mut self.buf);
                    data = &data[used..];
                    if self.buf.len() > MAX_MEMBER {
                        return Err(SplitError::Syntax(
                            "a list member other than `items` is too large".into(),
                        )
                        .into());
                    }
                    if done {
                        self.finish_member()?;
                    }
                }
                Phase::Done => {
                    if !b.is_ascii_whitespace() {
                        return Err(
                            SplitError::Syntax("data after the end of the list".into()).into()
                        );
                    }
                    data = &data[1..];
                }
            }
        }
        Ok(())
    }

    fn finish_member(&mut self) -> Result<(), SplitError> {
        let v: Value = serde_json::from_slice(&self.buf).map_err(|e| {
            SplitError::Syntax(format!(
                "member {:?}: {e}",
                String::from_utf8_lossy(&self.key)
            ))
        })?;
        let key = String::from_utf8_lossy(&self.key).into_owned();
        self.head.members.insert(key, v);
        self.buf.clear();
        self.phase = Phase::Key;
        Ok(())
    }

    /// The list's other members, once the response has ended.
    pub fn finish(mut self) -> Result<ListHead, SplitError> {
        // A scalar value at the very end has no delimiter after it.
        if self.phase == Phase::Value && self.scan.scalar && !self.buf.is_empty() {
            self.finish_member()?;
        }
        if self.phase != Phase::Done {
            return Err(SplitError::Truncated);
        }
        Ok(self.head)
    }
}

fn expect(b: u8, want: u8) -> Result<(), SplitError> {
    if b == want {
        Ok(())
    } else {
        Err(syntax(b, &format!("`{}`", want as char)))
    }
}

fn syntax(b: u8, wanted: &str) -> SplitError {
    SplitError::Syntax(format!("found {:?} where {wanted} belongs", b as char))
}

impl Scan {
    /// Copies bytes of the value into `out`; returns how many were used and whether
    /// the value ended. A scalar's delimiter is not used.
    fn advance(&mut self, data: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        let mut i = 0;
        while i < data.len() {
            if self.in_string {
                // Copy the run up to the next quote or backslash at once.
                match memchr::memchr2(b'"', b'\\', &data[i..]) {
                    _ if self.escaped => {
                        self.escaped = false;
                        out.push(data[i]);
                        i += 1;
                    }
                    None => {
                        out.extend_from_slice(&data[i..]);
                        return (data.len(), false);
                    }
                    Some(n) => {
                        out.extend_from_slice(&data[i..i + n]);
                        i += n;
                        let c = data[i];
                        out.push(c);
                        i += 1;
                        if c == b'\\' {
                            self.escaped = true;
                        } else {
                            self.in_string = false;
                            if self.depth == 0 {
                                return (i, true);
                            }
                        }
                    }
                }
                continue;
            }
            let c = data[i];
            if self.scalar {
                if matches!(c, b',' | b'}' | b']') || c.is_ascii_whitespace() {
                    return (i, true);
                }
                out.push(c);
                i += 1;
                continue;
            }
            match c {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    out.push(c);
                    i += 1;
                    if self.depth == 0 {
                        return (i, true);
                    }
                    continue;
                }
                c if c.is_ascii_whitespace() && self.depth == 0 && out.is_empty() => {
                    i += 1;
                    continue;
                }
                _ if self.depth == 0 && out.is_empty() => self.scalar = true,
                _ => {}
            }
            out.push(c);
            i += 1;
        }
        (i, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str, piece: usize) -> Result<(Vec<String>, ListHead), SplitError> {
        let mut s = ListSplitter::new(1 << 20);
        let mut items = Vec::new();
        for chunk in text.as_bytes().chunks(piece) {
            s.feed::<SplitError>(chunk, &mut |i| {
                items.push(String::from_utf8(i.to_vec()).unwrap());
                Ok(())
            })?;
        }
        Ok((items, s.finish()?))
    }

    #[test]
    fn items_come_out_whole_whatever_the_chunking() {
        let text = r#"{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"42","continue":"abc"},"items":[{"metadata":{"name":"a"},"data":{"k":"v \" } ] { [ \\"}},
            {"metadata":{"name":"b"},"n":[1,2,{"x":null}],"t":true}]}"#;
        for piece in [1, 2, 3, 7, 64, 4096] {
            let (items, head) = split(text, piece).unwrap();
            assert_eq!(items.len(), 2, "piece {piece}");
            let a: Value = serde_json::from_str(&items[0]).unwrap();
            assert_eq!(a["data"]["k"], "v \" } ] { [ \\");
            let b: Value = serde_json::from_str(&items[1]).unwrap();
            assert_eq!(b["n"][2]["x"], Value::Null);
            assert_eq!(head.resource_version(), Some("42"));
            assert_eq!(head.continue_token(), Some("abc"));
            assert_eq!(head.members["kind"], "ConfigMapList");
        }
    }

    #[test]
    fn metadata_after_the_items_and_empty_or_null_items() {
        let (items, head) = split(r#"{"items":[],"metadata":{"resourceVersion":"7"}}"#, 3).unwrap();
        assert!(items.is_empty());
        assert_eq!(head.resource_version(), Some("7"));
        let (items, head) = split(
            r#"{"items":null,"metadata":{"resourceVersion":"8"},"n":5}"#,
            5,
        )
        .unwrap();
        assert!(items.is_empty());
        assert_eq!(head.resource_version(), Some("8"));
        assert_eq!(head.members["n"], 5);
        assert!(head.continue_token().is_none());
    }

    #[test]
    fn a_cut_or_malformed_response_is_an_error() {
        assert_eq!(
            split(r#"{"items":[{"a":1}"#, 4).unwrap_err(),
            SplitError::Truncated
        );
        assert!(matches!(split(r#"[1,2]"#, 4), Err(SplitError::Syntax(_))));
        assert!(matches!(
            split(r#"{"items":[1]}"#, 4),
            Err(SplitError::Syntax(_))
        ));
        let mut s = ListSplitter::new(10);
        let e = s
            .feed::<SplitError>(br#"{"items":[{"a":"0123456789"}]}"#, &mut |_| Ok(()))
            .unwrap_err();
        assert_eq!(e, SplitError::TooLarge(10));
    }
}
