//! Request paths: the safety check (no dot segments, no encoded slashes), empty segments
//! merged (`//` is `/`, as nginx's `merge_slashes`), and the longest-prefix route lookup.
//!
//! Lookup cost depends on the depth of the request path, not on the number of routes:
//! each `/`-boundary prefix of the path is one hash lookup, longest first.

use std::collections::HashMap;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// A `.` or `..` segment, raw or percent-encoded, with or without `;` parameters.
    DotSegment,
    /// A percent-encoded `/`, `\` or NUL inside a segment.
    EncodedSeparator,
}

impl PathError {
    pub fn message(self) -> &'static str {
        match self {
            PathError::DotSegment => "path has a '.' or '..' segment",
            PathError::EncodedSeparator => "path has an encoded '/', '\\' or NUL",
        }
    }
}

/// Accepts a request path (without query) that is safe to match and forward.
///
/// A segment's `;` parameters do not hide a dot segment: `..;x` is refused like `..`,
/// since some servers behind a gateway drop the parameters before resolving the path.
pub fn check_path(path: &str) -> Result<(), PathError> {
    for seg in path.split('/') {
        let name = seg.split(';').next().unwrap_or(seg);
        if name == "." || name == ".." {
            return Err(PathError::DotSegment);
        }
        if seg.contains('%') {
            check_encoded_segment(seg)?;
            if name.len() < seg.len() {
                check_encoded_segment(name)?;
            }
        }
    }
    Ok(())
}

/// The path with every run of `/` merged into one, or `None` when it has no empty
/// segment. The merged path is what is matched and sent upstream.
pub fn merge_slashes(path: &str) -> Option<String> {
    if !path.contains("//") {
        return None;
    }
    let mut merged = String::with_capacity(path.len());
    let mut last_slash = false;
    for c in path.chars() {
        if c == '/' && last_slash {
            continue;
        }
        last_slash = c == '/';
        merged.push(c);
    }
    Some(merged)
}

fn check_encoded_segment(seg: &str) -> Result<(), PathError> {
    let b = seg.as_bytes();
    let mut decoded_dots = 0usize;
    let mut decoded_len = 0usize;
    let mut i = 0;
    while i < b.len() {
        let byte = if b[i] == b'%' && i + 2 < b.len() {
            match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    i += 3;
                    h << 4 | l
                }
                _ => {
                    i += 1;
                    b'%'
                }
            }
        } else {
            i += 1;
            b[i - 1]
        };
        if matches!(byte, b'/' | b'\\' | 0) {
            return Err(PathError::EncodedSeparator);
        }
        decoded_len += 1;
        if byte == b'.' {
            decoded_dots += 1;
        }
    }
    if decoded_len == decoded_dots && (1..=2).contains(&decoded_len) {
        return Err(PathError::DotSegment);
    }
    Ok(())
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Routes by prefix. A path matches a prefix when it equals it or continues it with `/`;
/// the longest matching prefix wins.
#[derive(Debug)]
pub struct Router<T> {
    by_prefix: HashMap<Box<str>, T, ahash::RandomState>,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router {
            by_prefix: HashMap::default(),
        }
    }
}

impl<T> Router<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a prefix (`/api/catalog`, or `/` for everything). Returns the value it replaced.
    pub fn insert(&mut self, prefix: &str, value: T) -> Option<T> {
        self.by_prefix.insert(prefix.into(), value)
    }

    pub fn len(&self) -> usize {
        self.by_prefix.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_prefix.is_empty()
    }

    /// The value of the longest prefix that matches `path`.
    pub fn lookup(&self, path: &str) -> Option<&T> {
        let mut candidate = path;
        loop {
            if let Some(v) = self.by_prefix.get(candidate) {
                return Some(v);
            }
            match candidate.rfind('/') {
                Some(0) | None => break,
                Some(i) => candidate = &candidate[..i],
            }
        }
        self.by_prefix.get("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_dot_segments_raw_and_encoded() {
        for bad in [
            "/api/../x",
            "/api/./x",
            "/api/..",
            "/api/%2e%2e/x",
            "/api/%2E%2E/x",
            "/api/.%2e/x",
            "/api/%2e/x",
            "/api/..;/x",
            "/api/..;jsessionid=1/x",
            "/api/.;x/y",
            "/api/%2e%2e;x/y",
            "/..;",
        ] {
            assert_eq!(check_path(bad), Err(PathError::DotSegment), "{bad}");
        }
    }

    #[test]
    fn empty_segments_are_merged() {
        assert_eq!(merge_slashes("/api/catalog/x"), None);
        assert_eq!(
            merge_slashes("//api//catalog/x").as_deref(),
            Some("/api/catalog/x")
        );
        assert_eq!(merge_slashes("/api/x///").as_deref(), Some("/api/x/"));
        assert_eq!(merge_slashes("//").as_deref(), Some("/"));
    }

    #[test]
    fn rejects_encoded_separators() {
        for bad in ["/api/a%2fb", "/api/a%2Fb", "/api/a%5cb", "/api/a%00"] {
            assert_eq!(check_path(bad), Err(PathError::EncodedSeparator), "{bad}");
        }
    }

    #[test]
    fn accepts_ordinary_paths() {
        for ok in [
            "/",
            "/api/catalog",
            "/api/catalog/items/42",
            "/api/catalog/a.b",
            "/api/catalog/...",
            "/api/catalog/%20x",
            "/api/catalog/100%",
            "/api/catalog/%zz",
            "/api/catalog/a;b=c",
            "/api/catalog/...;x",
        ] {
            assert_eq!(check_path(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let mut r = Router::new();
        r.insert("/api/catalog", 1);
        r.insert("/api/catalog/admin", 2);
        assert_eq!(r.lookup("/api/catalog"), Some(&1));
        assert_eq!(r.lookup("/api/catalog/"), Some(&1));
        assert_eq!(r.lookup("/api/catalog/items"), Some(&1));
        assert_eq!(r.lookup("/api/catalog/admin/users"), Some(&2));
        assert_eq!(r.lookup("/api/catalogue"), None);
        assert_eq!(r.lookup("/api"), None);
        assert_eq!(r.lookup("/"), None);
    }

    #[test]
    fn root_prefix_matches_everything_else() {
        let mut r = Router::new();
        r.insert("/", 0);
        r.insert("/api/x", 1);
        assert_eq!(r.lookup("/anything/else"), Some(&0));
        assert_eq!(r.lookup("/api/x/y"), Some(&1));
        assert_eq!(r.lookup("*"), Some(&0));
    }
}
