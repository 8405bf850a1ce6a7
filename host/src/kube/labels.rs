//! Label selectors matched by ballast itself, for objects read back from a
//! snapshot (a backup's `--selector` is sent to the API server instead). The
//! syntax is kubectl's `-l`: `key=value` (or `==`), `key!=value`, `key in (a,b)`,
//! `key notin (a,b)`, `key` (exists) and `!key` (does not exist), joined by
//! commas; every requirement must hold.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed label selector.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

/// Splits at commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn key(k: &str, whole: &str) -> Result<String, String> {
    let k = k.trim();
    let ok = !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(k.to_string())
    } else {
        Err(format!("{whole:?}: {k:?} is not a label key"))
    }
}

/// A label value: empty, or up to 63 letters, digits, `-`, `_` and `.`, beginning
/// and ending with a letter or digit.
fn value(v: &str, whole: &str) -> Result<String, String> {
    let v = v.trim();
    let ok = v.is_empty()
        || (v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()));
    if ok {
        Ok(v.to_string())
    } else {
        Err(format!("{whole:?}: {v:?} is not a label value"))
    }
}

fn values(list: &str, whole: &str) -> Result<Vec<String>, String> {
    let inner = list
        .trim()
        .strip_prefix('(')
        .and_then(|l| l.strip_suffix(')'))
        .ok_or_else(|| format!("{whole:?}: the values of in and notin go in parentheses"))?;
    if inner.trim().is_empty() {
        return Err(format!("{whole:?}: in and notin need at least one value"));
    }
    inner.split(',').map(|v| value(v, whole)).collect()
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let mut reqs = Vec::new();
        for part in split_top(s).into_iter().map(str::trim) {
            if part.is_empty() {
                return Err(format!("{s:?}: an empty requirement"));
            }
            let set = part
                .find('(')
                .map(|open| (part[..open].trim_end(), &part[open..]));
            let req = if let Some((head, list)) = set {
                // `key in (a,b)` / `key notin (a,b)`: the operator is a word of its own.
                let (k, not) = match (head.strip_suffix("notin"), head.strip_suffix("in")) {
                    (Some(k), _) => (k, true),
                    (None, Some(k)) => (k, false),
                    _ => {
                        return Err(format!(
                            "{s:?}: {part:?} is not KEY in (...) or KEY notin (...)"
                        ))
                    }
                };
                if !k.ends_with(char::is_whitespace) {
                    return Err(format!("{s:?}: {part:?} needs a space before in or notin"));
                }
                let (k, vs) = (key(k, s)?, values(list, s)?);
                if not {
                    Requirement::NotIn(k, vs)
                } else {
                    Requirement::In(k, vs)
                }
            } else if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotIn(key(k, s)?, vec![value(v, s)?])
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::In(key(k, s)?, vec![value(v, s)?])
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::DoesNotExist(key(k, s)?)
            } else {
                Requirement::Exists(key(part, s)?)
            };
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels[k].as_str();
        self.0.iter().all(|r| match r {
            Requirement::In(k, vs) => get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            Requirement::NotIn(k, vs) => !get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors_match_as_kubectl_reads_them() {
        let l = json!({"app": "web", "tier": "front"});
        let yes = |s: &str| LabelSelector::parse(s).unwrap().matches(&l);
        assert!(yes("app=web"));
        assert!(yes("app==web,tier"));
        assert!(yes("app in (web, db),tier notin (back)"));
        assert!(yes("!missing"));
        assert!(yes("app!=db"));
        assert!(yes("missing!=x"));
        assert!(!yes("app=db"));
        assert!(!yes("app notin (web)"));
        assert!(!yes("missing"));
        assert!(!yes("!app"));
        assert!(yes("app in(web)"));
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("app in ()").is_err());
        assert!(LabelSelector::parse("app=a b").is_err());
        assert!(LabelSelector::parse("app=web=x").is_err());
        assert!(LabelSelector::parse("appin (x)").is_err());
        assert!(LabelSelector::parse("a b c").is_err());
        assert!(LabelSelector::parse("app=web,,x").is_err());
    }
}
