//! Exclude patterns. A pattern with a `/` is matched against the whole absolute path;
//! a pattern without one against the file name alone (`*.tmp`, `.cache`).

use std::path::Path;

use globset::{Glob, GlobSet, GlobSetBuilder};

#[derive(Debug)]
pub struct Excludes {
    by_path: GlobSet,
    by_name: GlobSet,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Excludes, String> {
        let mut by_path = GlobSetBuilder::new();
        let mut by_name = GlobSetBuilder::new();
        for p in patterns {
            let glob = Glob::new(p).map_err(|e| format!("exclude pattern `{p}`: {e}"))?;
            if p.contains('/') {
                by_path.add(glob);
            } else {
                by_name.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| format!("exclude patterns: {e}"));
        Ok(Excludes {
            by_path: build(by_path)?,
            by_name: build(by_name)?,
        })
    }

    pub fn matches(&self, path: &Path) -> bool {
        self.by_path.is_match(path) || path.file_name().is_some_and(|n| self.by_name.is_match(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_and_path_patterns() {
        let e = Excludes::new(&["*.tmp".into(), "/data/cache/**".into()]).unwrap();
        assert!(e.matches(Path::new("/x/y/file.tmp")));
        assert!(!e.matches(Path::new("/x/y/file.txt")));
        assert!(e.matches(Path::new("/data/cache/a/b")));
        assert!(!e.matches(Path::new("/data/keep/a")));
        assert!(Excludes::new(&["[".into()])
            .unwrap_err()
            .contains("exclude pattern `[`"));
    }
}
