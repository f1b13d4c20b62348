//! Lexical path normalization of member names and hard-link targets.

/// Normalizes `raw` to a path relative to the archive root: leading `/` and `./` are stripped,
/// empty and `.` components dropped, `..` resolved lexically and a trailing `/` removed.
/// Returns `None` when a `..` climbs above the root. An empty result means the root itself.
pub(super) fn normalize(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    for comp in raw.split(|&c| c == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                let cut = out.iter().rposition(|&c| c == b'/');
                match cut {
                    Some(n) => out.truncate(n),
                    None if !out.is_empty() => out.clear(),
                    None => return None,
                }
            }
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(comp);
            }
        }
    }
    Some(out)
}

/// True if `raw` names a directory by the BSD convention: it ends in `/`.
pub(super) fn has_trailing_slash(raw: &[u8]) -> bool {
    raw.len() > 1 && raw.last() == Some(&b'/')
}

#[cfg(test)]
mod tests {
    use super::normalize;

    fn n(s: &str) -> Option<String> {
        normalize(s.as_bytes()).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn normalizes() {
        assert_eq!(n("a/b").as_deref(), Some("a/b"));
        assert_eq!(n("./a/b/").as_deref(), Some("a/b"));
        assert_eq!(n("///a//b/./c/").as_deref(), Some("a/b/c"));
        assert_eq!(n(".").as_deref(), Some(""));
        assert_eq!(n("./").as_deref(), Some(""));
        assert_eq!(n("/").as_deref(), Some(""));
        assert_eq!(n("").as_deref(), Some(""));
        assert_eq!(n("a/../b").as_deref(), Some("b"));
        assert_eq!(n("a/b/../../c").as_deref(), Some("c"));
        assert_eq!(n("a/..").as_deref(), Some(""));
        assert_eq!(n("./././x").as_deref(), Some("x"));
        assert_eq!(n("...").as_deref(), Some("..."));
        assert_eq!(n("..a/b..").as_deref(), Some("..a/b.."));
        assert_eq!(n(".."), None);
        assert_eq!(n("../a"), None);
        assert_eq!(n("/../a"), None);
        assert_eq!(n("a/../../b"), None);
        assert_eq!(n("a/./../.."), None);
    }
}
