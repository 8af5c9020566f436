//! Object keys as snapshot paths, and back (FORMAT.md §15.2).
//!
//! A key (relative to the backed-up prefix) is split at `/`; each segment
//! becomes one name of the snapshot path:
//!
//! | segment | name |
//! | --- | --- |
//! | `%`, a control character (U+0000–U+001F, U+007F) | `%XX`, the byte in upper-case hex |
//! | `.` / `..` | `%2E` / `%2E%2E` |
//! | empty (`a//b`, a leading or trailing `/`) | `%` |
//! | longer than [`MAX_NAME`] bytes once escaped | pieces of at most [`MAX_NAME`] bytes, each but the last followed by `%+` and a `/` |
//!
//! An object whose key is also the start of other keys (`a` beside `a/b`)
//! is stored inside that directory as `%=` (`a/%=`). Every literal `%` is
//! escaped, so `%`, `%+` and `%=` never come from a key's own bytes, and
//! [`path_to_key`] inverts [`key_to_path`] exactly.

use std::collections::BTreeSet;

/// The longest name the escaping produces before a `%+` continuation
/// (local file systems allow 255 bytes).
pub const MAX_NAME: usize = 200;

/// The name of an object stored inside the directory its key also names.
pub const SELF_NAME: &str = "%=";

/// Why a snapshot path is not the escaped form of a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path:?} is not an escaped object key: {reason}")]
pub struct UnescapeError {
    /// The path.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

fn escape_segment(segment: &str, out: &mut Vec<String>) {
    if segment.is_empty() {
        out.push("%".into());
        return;
    }
    let mut escaped = String::with_capacity(segment.len());
    // Piece boundaries, kept outside `%XX` and inside char boundaries.
    let mut pieces = Vec::new();
    if segment == "." || segment == ".." {
        escaped.push_str(if segment == "." { "%2E" } else { "%2E%2E" });
    } else {
        for c in segment.chars() {
            let mut unit = String::new();
            if c == '%' || c.is_ascii_control() {
                unit.push_str(&format!("%{:02X}", c as u32));
            } else {
                unit.push(c);
            }
            if escaped.len() + unit.len() > MAX_NAME {
                pieces.push(std::mem::take(&mut escaped));
            }
            escaped.push_str(&unit);
        }
    }
    for piece in pieces {
        out.push(format!("{piece}%+"));
    }
    out.push(escaped);
}

/// The snapshot path (names joined with `/`) of `key`, for an object
/// whose key does not also start other keys.
pub fn key_to_path(key: &str) -> String {
    let mut names = Vec::new();
    for segment in key.split('/') {
        escape_segment(segment, &mut names);
    }
    names.join("/")
}

/// The paths of every key of a listing, with `%=` added where a key's path
/// is also a directory of another key's path. Returned in the keys' order.
pub fn layout<'a>(keys: impl IntoIterator<Item = &'a str> + Clone) -> Vec<String> {
    let paths: Vec<String> = keys.into_iter().map(key_to_path).collect();
    let all: BTreeSet<&str> = paths.iter().map(String::as_str).collect();
    paths
        .iter()
        .map(|path| {
            let dir = format!("{path}/");
            let is_dir = all.range(dir.as_str()..).next().is_some_and(|next| next.starts_with(&dir));
            if is_dir { format!("{dir}{SELF_NAME}") } else { path.clone() }
        })
        .collect()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The key a snapshot path (made by [`layout`] or [`key_to_path`]) stands for.
pub fn path_to_key(path: &str) -> Result<String, UnescapeError> {
    let fail = |reason: &str| UnescapeError { path: path.into(), reason: reason.into() };
    let names: Vec<&str> = path.split('/').collect();
    let mut key: Vec<u8> = Vec::with_capacity(path.len());
    let mut continued = false;
    for (i, name) in names.iter().enumerate() {
        let last = i + 1 == names.len();
        if name.is_empty() {
            return Err(fail("an empty name"));
        }
        if *name == SELF_NAME {
            if !last || i == 0 || continued {
                return Err(fail("`%=` is only the last name, after a directory"));
            }
            // The directory's own key: drop the separator added after it.
            key.pop();
            return String::from_utf8(key).map_err(|_| fail("not UTF-8"));
        }
        if *name == "%" {
            if continued {
                return Err(fail("`%` after a `%+` piece"));
            }
        } else {
            let (body, more) = match name.strip_suffix("%+") {
                Some(body) => (body, true),
                None => (*name, false),
            };
            if more && last {
                return Err(fail("the last name ends in `%+`"));
            }
            if body.is_empty() {
                return Err(fail("an empty `%+` piece"));
            }
            let bytes = body.as_bytes();
            let mut j = 0;
            while j < bytes.len() {
                if bytes[j] == b'%' {
                    let (Some(h), Some(l)) =
                        (bytes.get(j + 1).copied().and_then(hex), bytes.get(j + 2).copied().and_then(hex))
                    else {
                        return Err(fail("`%` not followed by two upper-case hex digits"));
                    };
                    let b = h * 16 + l;
                    if b == b'/' || b >= 0x80 {
                        return Err(fail("`%XX` that no key segment produces"));
                    }
                    key.push(b);
                    j += 3;
                } else {
                    key.push(bytes[j]);
                    j += 1;
                }
            }
            if more {
                continued = true;
                continue;
            }
        }
        continued = false;
        if !last {
            key.push(b'/');
        }
    }
    String::from_utf8(key).map_err(|_| fail("not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_their_paths() {
        let long = "x".repeat(450);
        let cases: &[(&str, String)] = &[
            ("a.txt", "a.txt".into()),
            ("dir/sub/file", "dir/sub/file".into()),
            ("dir/", "dir/%".into()),
            ("a//b", "a/%/b".into()),
            ("/lead", "%/lead".into()),
            ("../x", "%2E%2E/x".into()),
            ("./x/.", "%2E/x/%2E".into()),
            ("...", "...".into()),
            ("100%", "100%25".into()),
            ("tab\there\n", "tab%09here%0A".into()),
            ("del\u{7f}", "del%7F".into()),
            ("é ü/漢字", "é ü/漢字".into()),
            ("", "%".into()),
            (long.as_str(), format!("{}%+/{}%+/{}", "x".repeat(200), "x".repeat(200), "x".repeat(50))),
        ];
        for (key, path) in cases {
            assert_eq!(&key_to_path(key), path, "{key:?}");
            assert_eq!(path_to_key(path).as_deref(), Ok(*key), "{path:?}");
            for name in path.split('/') {
                assert!(crate::format::tree::Node::valid_name(name.as_bytes()) && name.len() <= MAX_NAME + 2);
            }
        }
    }

    #[test]
    fn a_key_that_is_also_a_directory_goes_inside_it() {
        let keys = ["a", "a-b", "a/b", "a/b/c", "z"];
        assert_eq!(layout(keys.iter().copied()), ["a/%=", "a-b", "a/b/%=", "a/b/c", "z"]);
        for (key, path) in keys.iter().zip(layout(keys.iter().copied())) {
            assert_eq!(path_to_key(&path).unwrap(), *key);
        }
        // A trailing-slash marker beside its contents is no clash: `dir/%`.
        assert_eq!(layout(["dir/", "dir/x"]), ["dir/%", "dir/x"]);
    }

    #[test]
    fn paths_that_no_key_makes_are_refused() {
        for bad in ["a//b", "%=", "%=/a", "a/%=/b", "x%+", "%+/a", "a%+/%", "%zz", "%2F", "%C3%A9", "a%", "%4"] {
            assert!(path_to_key(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn escaping_round_trips(key in "([a-z%./\\x00-\\x1f\\x7fé]{0,12}|[a-z]{150,450})(/[a-z.%]{0,3}){0,3}") {
            let path = key_to_path(&key);
            proptest::prop_assert_eq!(path_to_key(&path).unwrap(), key.clone());
            for name in path.split('/') {
                proptest::prop_assert!(crate::format::tree::Node::valid_name(name.as_bytes()));
            }
            let dir = layout([key.as_str(), &format!("{key}/child")]);
            proptest::prop_assert_eq!(path_to_key(&dir[0]).unwrap(), key);
        }
    }
}
