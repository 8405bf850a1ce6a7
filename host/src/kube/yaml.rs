//! YAML for manifests, written by hand so that every parser reads back the same
//! value. kubectl reads YAML 1.1, where `on`, `yes`, `n`, `0777`, `1_000` and `1:20`
//! are not strings; a YAML 1.2 emitter leaves them unquoted, and a ConfigMap value
//! `"on"` would come back as `true`. Here a string is plain only when it cannot be
//! read as anything else in either version; otherwise it is double-quoted (JSON's
//! escapes are YAML's), and a multi-line string is a literal block where that is
//! exact. Keys come in the value's order (sorted, for ballast's objects).

use serde_json::Value;

/// The document for `v`, ending in a newline.
pub fn to_string(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => seq(&mut out, a, 0),
        other => {
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn map(out: &mut String, m: &serde_json::Map<String, Value>, depth: usize) {
    for (k, v) in m {
        indent(out, depth);
        key(out, k, depth);
        value_after(out, v, depth, depth + 2);
    }
}

/// Parsers refuse an implicit key longer than 1,024 characters.
const MAX_IMPLICIT_KEY: usize = 1000;

/// Writes `key:`, or for a long key the explicit form `? key` and `:` on the next
/// line at `depth`.
fn key(out: &mut String, k: &str, depth: usize) {
    let k = scalar(k);
    if k.chars().count() > MAX_IMPLICIT_KEY {
        out.push_str("? ");
        out.push_str(&k);
        out.push('\n');
        indent(out, depth);
    } else {
        out.push_str(&k);
    }
    out.push(':');
}

fn seq(out: &mut String, a: &[Value], depth: usize) {
    for v in a {
        indent(out, depth);
        out.push('-');
        match v {
            Value::Array(x) if !x.is_empty() => {
                out.push('\n');
                seq(out, x, depth + 2);
            }
            // A map in a list starts on the dash's line.
            Value::Object(m) if !m.is_empty() => {
                let mut first = true;
                for (k, x) in m {
                    if first {
                        out.push(' ');
                        first = false;
                    } else {
                        indent(out, depth + 2);
                    }
                    key(out, k, depth + 2);
                    value_after(out, x, depth + 2, depth + 4);
                }
            }
            other => value_after(out, other, depth, depth + 2),
        }
    }
}

/// Writes what follows `key:` or `-`: a nested block on the next lines, or a
/// scalar on this one.
fn value_after(out: &mut String, v: &Value, depth: usize, child: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            map(out, m, child);
        }
        // Lists under a key are not indented further, as kubectl writes them.
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            seq(out, a, depth);
        }
        Value::String(s) if block_ok(s) => {
            out.push_str(if s.ends_with('\n') { " |\n" } else { " |-\n" });
            for line in s.strip_suffix('\n').unwrap_or(s).split('\n') {
                if !line.is_empty() {
                    indent(out, child);
                    out.push_str(line);
                }
                out.push('\n');
            }
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

fn inline(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// Whether a multi-line string can be a literal block and read back exactly: some
/// content (a block of nothing but line breaks reads back empty), at most one final
/// newline, no line that starts with a space or tab (the first would need an
/// indentation indicator), no trailing spaces, no character a block cannot hold.
fn block_ok(s: &str) -> bool {
    s.contains('\n')
        && !s.trim_end_matches('\n').is_empty()
        && !s.ends_with("\n\n")
        && s.split('\n').all(|l| {
            !l.starts_with([' ', '\t'])
                && !l.ends_with([' ', '\t'])
                && l.chars().all(|c| c == '\t' || (raw_ok(c) && c != '\r'))
        })
}

/// YAML's printable characters (YAML 1.2, 5.1): parsers refuse the others raw.
fn printable(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{7e}' | '\u{85}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}')
        || c >= '\u{10000}'
}

/// Characters some YAML parsers take as line breaks or marks (YAML 1.1 breaks lines
/// at NEL, LS and PS; a BOM starts a stream).
fn odd_break(c: char) -> bool {
    matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}')
}

/// Whether `c` may be written as itself outside a quoted scalar's escapes.
fn raw_ok(c: char) -> bool {
    printable(c) && !odd_break(c) && !c.is_control()
}

/// A string as a plain scalar if that is safe, else double-quoted.
fn scalar(s: &str) -> String {
    if plain_ok(s) {
        return s.to_string();
    }
    // JSON's escapes are YAML's (JSON escapes C0 controls, `"` and `\\`); the
    // characters it leaves raw that YAML would refuse or read as breaks are
    // escaped too.
    let json = serde_json::to_string(s).expect("a string serializes");
    if json.chars().all(raw_ok) {
        return json;
    }
    json.chars()
        .map(|c| {
            if raw_ok(c) {
                c.to_string()
            } else {
                format!("\\u{:04x}", c as u32)
            }
        })
        .collect()
}

/// Words that YAML 1.1 or 1.2 read as booleans or null.
const RESERVED: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
    "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL", "~", "<<",
    "=",
];

fn plain_ok(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if RESERVED.contains(&s) || looks_numeric(s) {
        return false;
    }
    // Characters that start something else, or that a plain scalar cannot begin with.
    if "-?:,[]{}#&*!|>'\"%@` \t".contains(first) {
        return false;
    }
    if s.ends_with([' ', '\t', ':']) {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.starts_with("...") {
        return false;
    }
    // No tab, no break, nothing a parser refuses raw.
    s.chars().all(raw_ok)
}

/// Whether a YAML 1.1 or 1.2 parser could read `s` as a number or a time: digits
/// with signs, `_`, `.`, `:`, exponents, `0x`/`0o`/`0b`, `.inf`, `.nan`, and dates.
fn looks_numeric(s: &str) -> bool {
    let t = s.trim_start_matches(['+', '-']);
    if t.is_empty() {
        return false;
    }
    let lower = t.to_ascii_lowercase();
    if [".inf", ".nan"].contains(&lower.as_str()) {
        return true;
    }
    let first = t.chars().next().expect("not empty");
    if !(first.is_ascii_digit() || first == '.') {
        return false;
    }
    // Anything made of number characters may be one to some parser (1_000, 1:20,
    // 0x1F, 1e3, 2026-01-01, 0o17).
    t.chars().all(|c| {
        c.is_ascii_hexdigit()
            || "_.:-+xXoObB ".contains(c)
            || c == 'T'
            || c == 'Z'
            || c == 't'
            || c == 'z'
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_that_yaml_1_1_would_misread_are_quoted() {
        for s in [
            "on",
            "off",
            "yes",
            "no",
            "y",
            "N",
            "true",
            "Null",
            "~",
            "",
            "1_000",
            "0777",
            "0x1F",
            "1:20",
            "1e3",
            ".5",
            "-1",
            "+1",
            ".inf",
            "2026-01-01",
            "1.0",
            " lead",
            "trail ",
            "a: b",
            "a #c",
            "-dash",
            "*ref",
            "&anchor",
            "!tag",
            "[x]",
            "{x}",
            "'q'",
            "\"q\"",
            "%p",
            "@a",
            "`b",
            "key:",
            "?x",
            "|",
            ">",
            "=",
            "... y",
            "---",
            "a\tb",
            "del\u{7f}",
            "c1\u{9b}",
            "nonchar\u{fffe}",
            "ls\u{2028}",
            "bom\u{feff}",
        ] {
            let out = scalar(s);
            assert!(out.starts_with('"'), "{s:?} came out plain: {out}");
            assert!(
                out.chars().all(raw_ok),
                "{s:?} has a raw character a parser refuses: {out:?}"
            );
            let back: String = serde_yaml_ng::from_str(&out).unwrap();
            assert_eq!(back, s);
        }
        for s in [
            "nginx:1.27",
            "web",
            "app.kubernetes.io/name",
            "100m",
            "128Mi",
            "a b",
            "ReadWriteOnce",
            "caf\u{e9}",
        ] {
            assert_eq!(scalar(s), s, "{s:?} is safe plain");
        }
        assert_eq!(scalar("10.96.0.1"), "\"10.96.0.1\"");
    }

    /// The implicit types of YAML 1.1 (yaml.org/type), which go-yaml v2 (kubectl's)
    /// resolves plain scalars by.
    fn yaml_1_1_non_string(s: &str) -> bool {
        let patterns = [
            r"^(y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$",
            r"^(~|null|Null|NULL|)$",
            r"^[-+]?0b[0-1_]+$",
            r"^[-+]?0[0-7_]+$",
            r"^[-+]?(0|[1-9][0-9_]*)$",
            r"^[-+]?0x[0-9a-fA-F_]+$",
            r"^[-+]?[1-9][0-9_]*(:[0-5]?[0-9])+$",
            r"^[-+]?([0-9][0-9_]*)?\.[0-9.]*([eE][-+][0-9]+)?$",
            r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$",
            r"^[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*$",
            r"^[-+]?\.(inf|Inf|INF)$",
            r"^\.(nan|NaN|NAN)$",
            r"^[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(([Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](\.[0-9]*)?(([ \t]*)Z|[-+][0-9][0-9]?(:[0-9][0-9])?)?)?$",
            r"^(<<|=)$",
        ];
        static SET: std::sync::OnceLock<regex::RegexSet> = std::sync::OnceLock::new();
        SET.get_or_init(|| regex::RegexSet::new(patterns).unwrap())
            .is_match(s)
    }

    #[test]
    fn no_plain_scalar_is_anything_but_a_string_to_yaml_1_1_or_1_2() {
        // Every string of up to 5 characters from an alphabet of number, boolean
        // and date characters, plus the reserved words: what comes out plain must
        // be a string to both versions.
        let alphabet: Vec<char> = "0179.:_-+xbeEoZTyYnN ".chars().collect();
        let mut strings: Vec<String> = RESERVED.iter().map(|s| s.to_string()).collect();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..50_000 {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let len = 1 + (seed >> 60) as usize % 5;
            let s: String = (0..len)
                .map(|i| alphabet[((seed >> (8 * i)) & 0xff) as usize % alphabet.len()])
                .collect();
            strings.push(s);
        }
        strings.extend(
            [
                "2026-12-04",
                "2026-12-04T03:10:00Z",
                "1_0:3_0",
                "0o17",
                "0b101",
                "190:20:30.15",
            ]
            .map(String::from),
        );
        let mut plain = 0;
        for s in &strings {
            let out = scalar(s);
            if out == *s {
                plain += 1;
                assert!(
                    !yaml_1_1_non_string(s),
                    "{s:?} is plain but not a string in YAML 1.1"
                );
                let back: Value = serde_yaml_ng::from_str(&format!("k: {out}")).unwrap();
                assert_eq!(
                    back["k"],
                    Value::String(s.clone()),
                    "{s:?} reads back otherwise in YAML 1.2"
                );
            }
        }
        assert!(
            plain > 1000,
            "only {plain} strings came out plain: the test would prove little"
        );
    }

    #[test]
    fn documents_read_back_as_the_same_value() {
        let v = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "labels": {"enabled": "on", "n": "1_000"}, "annotations": {}},
            "data": {"script": "#!/bin/sh\necho hi\n", "noeol": "a\nb", "indented": "  x\ny",
                     "blank": "a\n\nb\n", "tab": "a\tb", "unicode": "caf\u{e9} \u{2028}x", "empty": ""},
            "list": [{"name": "x", "ports": [{"port": 80}, {"port": 443, "protocol": "TCP"}]}, "s", 1, true, null, [], {}, ["a", ["b"]], "l1\nl2\n"],
            ".dockerconfigjson": "e30=",
            "newline": "\n", "controls": "a\u{7f}b\u{9b}c",
            "long": {"k".repeat(1500): "v", "nested": [{"k".repeat(1200): {"x": 1}}]},
            "nums": [0, -1, 1.5, 1e300],
        });
        let text = to_string(&v);
        let back: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(back, v, "{text}");
        assert!(text.contains("enabled: \"on\""), "{text}");
        assert!(
            text.contains("script: |\n    #!/bin/sh\n    echo hi\n"),
            "{text}"
        );
        assert!(text.contains("noeol: |-\n"), "{text}");
    }
}
