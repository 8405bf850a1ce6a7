//! Program grants: which arguments a granted program may be given, by position.
//!
//! ```yaml
//! programs:
//!   mysqldump:
//!     path: /usr/bin/mysqldump
//!     args: ["--single-transaction", "--quick", "*"]     # exactly three arguments
//!   fsfreeze:
//!     path: /usr/sbin/fsfreeze
//!     args: [["--freeze", "/srv/data"], ["--unfreeze", "/srv/data"]]   # either shape
//!     run-as: root
//!     read: [/srv/data]
//!   touch: /usr/bin/touch                                 # no arguments at all
//! ```
//!
//! Each element of a shape matches the argument at its position: a literal, or a glob
//! whose `*`, `?` and `[...]` never match `/` (so `/srv/restore/*.rdb` covers files in
//! that directory and nothing below or beside it). A shape's last element may be `**`:
//! any further arguments. No `args` means no arguments. Whatever the shape, an argument
//! with a `..` component (`/srv/restore/../x`, `of=../x`) is refused, and so is
//! anything [`clients::refused`](super::clients::refused) lists for a database client.

use std::path::PathBuf;

use globset::{GlobBuilder, GlobMatcher};
use serde::Deserialize;

use super::TargetKind;

/// The `args` of a grant as written: one shape, or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ArgShapes {
    One(Vec<String>),
    Any(Vec<Vec<String>>),
}

/// One element of a shape.
#[derive(Debug, Clone)]
enum Element {
    Literal(String),
    Glob(GlobMatcher),
    /// `**` as the last element: any further arguments.
    Rest,
}

/// The argument shapes a program accepts.
#[derive(Debug, Clone, Default)]
pub struct Shapes {
    shapes: Vec<Vec<Element>>,
    /// As written, for messages.
    written: Vec<Vec<String>>,
}

impl Shapes {
    /// Compiles the shapes of a grant; `None` (no `args`) accepts no arguments.
    pub fn compile(args: Option<&ArgShapes>) -> Result<Shapes, String> {
        let written: Vec<Vec<String>> = match args {
            None => vec![vec![]],
            Some(ArgShapes::One(shape)) => vec![shape.clone()],
            Some(ArgShapes::Any(shapes)) => shapes.clone(),
        };
        let mut shapes = Vec::new();
        for shape in &written {
            let mut elements = Vec::new();
            for (i, p) in shape.iter().enumerate() {
                if p == "**" {
                    if i + 1 != shape.len() {
                        return Err("`**` (any further arguments) may only end a shape".into());
                    }
                    elements.push(Element::Rest);
                } else if p.contains("**") {
                    return Err(format!(
                        "`{p}`: `**` may not be part of an argument (a pattern never matches across `/`)"
                    ));
                } else if p.contains(['*', '?', '[']) {
                    if let Some(why) = class_may_match_slash(p) {
                        return Err(format!("`{p}`: {why}"));
                    }
                    let glob = GlobBuilder::new(p)
                        .literal_separator(true)
                        .build()
                        .map_err(|e| format!("`{p}`: {e}"))?;
                    elements.push(Element::Glob(glob.compile_matcher()));
                } else {
                    elements.push(Element::Literal(p.clone()));
                }
            }
            shapes.push(elements);
        }
        Ok(Shapes { shapes, written })
    }

    /// Whether `args` fit one of the shapes.
    pub fn allow(&self, args: &[String]) -> Result<(), String> {
        if let Some(bad) = args.iter().find(|a| has_parent_component(a)) {
            return Err(format!("argument {bad:?} has a `..` component"));
        }
        if self.shapes.iter().any(|s| fits(s, args)) {
            return Ok(());
        }
        let allowed: Vec<String> = self
            .written
            .iter()
            .map(|s| {
                if s.is_empty() {
                    "no arguments".to_string()
                } else {
                    format!("{s:?}")
                }
            })
            .collect();
        Err(format!(
            "arguments {args:?} fit none of the shapes granted ({})",
            allowed.join(" or ")
        ))
    }
}

/// Why a `[...]` class of `pattern` could match `/`, if one could: globset's
/// `literal_separator` keeps `*` and `?` from matching it, not a class. A negated
/// class, a class naming `/`, or a range that spans it is refused.
fn class_may_match_slash(pattern: &str) -> Option<&'static str> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '[' {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        if matches!(chars.get(j), Some('!' | '^')) {
            return Some(
                "a negated class `[!...]` could match `/`: list the characters it may be instead",
            );
        }
        // A `]` first in a class is a literal.
        if chars.get(j) == Some(&']') {
            j += 1;
        }
        let start = j;
        while j < chars.len() && chars[j] != ']' {
            j += 1;
        }
        let class = &chars[start..j.min(chars.len())];
        if class.contains(&'/') {
            return Some("a class that names `/` would match it");
        }
        for w in class.windows(3) {
            if w[1] == '-' && w[0] <= '/' && '/' <= w[2] {
                return Some("a range in a class spans `/`");
            }
        }
        i = j + 1;
    }
    None
}

/// Whether a glob element's match has exactly the pattern's `/`s (every `/` of an
/// allowed pattern is a literal): a second guard, should the glob engine ever let
/// one through.
fn same_slashes(pattern: &GlobMatcher, arg: &str) -> bool {
    pattern.glob().glob().matches('/').count() == arg.matches('/').count()
}

fn fits(shape: &[Element], args: &[String]) -> bool {
    let mut i = 0;
    for e in shape {
        match e {
            Element::Rest => return true,
            Element::Literal(l) => {
                if args.get(i) != Some(l) {
                    return false;
                }
            }
            Element::Glob(g) => match args.get(i) {
                Some(a) if g.is_match(a) && same_slashes(g, a) => {}
                _ => return false,
            },
        }
        i += 1;
    }
    i == args.len()
}

/// Whether any piece of an argument, split at `/`, `=`, `:` or `,`, is `..`.
fn has_parent_component(arg: &str) -> bool {
    arg.split(['/', '=', ':', ',']).any(|piece| piece == "..")
}

/// Who a program runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunAs {
    /// ballast's own user (when it cannot switch: it does not run as root).
    Inherit,
    /// A user of the system, by name.
    User(String),
}

/// A program a plugin may run, resolved from the policy.
#[derive(Debug, Clone)]
pub struct Program {
    pub path: PathBuf,
    pub shapes: Shapes,
    /// The database kind it is a client of: it runs only with a target of that kind.
    pub client: Option<TargetKind>,
    pub run_as: RunAs,
    /// Extra paths it may read (below the system's), and write (below its own
    /// directory).
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes(yaml: &str) -> Shapes {
        Shapes::compile(Some(&serde_yaml_ng::from_str(yaml).unwrap())).unwrap()
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments_are_matched_by_position() {
        let s = shapes(r#"["--single-transaction", "--quick", "[a-z]*"]"#);
        assert!(s
            .allow(&args(&["--single-transaction", "--quick", "shop"]))
            .is_ok());
        for bad in [
            &["--quick", "--single-transaction", "shop"][..],
            &["--single-transaction", "--quick"],
            &[
                "--single-transaction",
                "--quick",
                "shop",
                "--result-file=/x",
            ],
            &["--single-transaction", "--quick", "Shop"],
        ] {
            let e = s.allow(&args(bad)).unwrap_err();
            assert!(e.contains("fit none of the shapes"), "{bad:?}: {e}");
        }
        // No args: no arguments at all.
        let none = Shapes::compile(None).unwrap();
        assert!(none.allow(&[]).is_ok());
        assert!(none.allow(&args(&["-x"])).is_err());
        // `**` ends a shape.
        let rest = shapes(r#"["--list", "**"]"#);
        assert!(rest.allow(&args(&["--list"])).is_ok());
        assert!(rest.allow(&args(&["--list", "a", "b"])).is_ok());
        assert!(rest.allow(&args(&["a"])).is_err());
        let either = shapes(r#"[["--freeze", "/srv/data"], ["--unfreeze", "/srv/data"]]"#);
        assert!(either.allow(&args(&["--unfreeze", "/srv/data"])).is_ok());
        assert!(either.allow(&args(&["--unfreeze", "/"])).is_err());
    }

    #[test]
    fn a_path_pattern_never_crosses_a_slash_or_goes_up() {
        let s = shapes(r#"["of=/srv/restore/*.rdb"]"#);
        assert!(s.allow(&args(&["of=/srv/restore/dump.rdb"])).is_ok());
        for bad in [
            "of=/srv/restore/../escaped.rdb",
            "of=/srv/restore/sub/x.rdb",
            "of=/srv/restore/..rdb/../../x.rdb",
            "of=/srv/restore/x.rdb/..",
        ] {
            assert!(s.allow(&args(&[bad])).is_err(), "{bad}");
        }
        let lit = shapes(r#"["/tmp/ballast-quiesce-*"]"#);
        assert!(lit
            .allow(&args(&["/tmp/ballast-quiesce-../../etc/cron.d/x"]))
            .is_err());
        assert!(lit.allow(&args(&["/tmp/ballast-quiesce-ok"])).is_ok());
        // `..` is refused even where a shape would take anything.
        let any = shapes(r#"["**"]"#);
        assert!(any.allow(&args(&["--dir=.."])).is_err());
        assert!(any.allow(&args(&["a..b", "..x"])).is_ok());
    }

    #[test]
    fn patterns_that_would_cross_directories_are_refused_at_load() {
        for bad in [
            r#"["/srv/**/x"]"#,
            r#"["**", "x"]"#,
            r#"["/srv/restore/*[!.]*"]"#,
            r#"["/srv/restore/[^a]x"]"#,
            r#"["/srv/restore/[+-0]x"]"#,
            r#"["/srv/restore/[a/]x"]"#,
        ] {
            let e = Shapes::compile(Some(&serde_yaml_ng::from_str(bad).unwrap())).unwrap_err();
            assert!(e.contains("**") || e.contains("`/`"), "{bad}: {e}");
        }
        // Classes that cannot match `/` are fine.
        let s = shapes(r#"["/srv/restore/[a-z0-9]*.rdb"]"#);
        assert!(s.allow(&args(&["/srv/restore/x1.rdb"])).is_ok());
        assert!(s.allow(&args(&["/srv/restore/x/y.rdb"])).is_err());
    }
}
