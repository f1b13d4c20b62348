//! HTML building blocks of the admin UI: escaping, the page shell, number and mode formatting.

use std::fmt::Write;

/// Escapes text for HTML element content and quoted attribute values. Every string that comes
/// from an add-on (names, tarball entry names, file contents, reasons) goes through here.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes bytes (a tarball entry name) shown as text: invalid UTF-8 becomes U+FFFD.
pub fn esc_bytes(bytes: &[u8]) -> String {
    esc(&String::from_utf8_lossy(bytes))
}

/// Percent-encodes a query-string value (everything but unreserved characters).
pub fn url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A byte count for people: `213 B`, `1.5 KiB`, `2.0 GiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `ls -l`'s permission string of a mode's lower 12 bits, e.g. `rwxr-xr-x`.
pub fn mode(mode: u32) -> String {
    let mut out = String::with_capacity(9);
    for (shift, special, set, unset) in
        [(6, 0o4000, 's', 'S'), (3, 0o2000, 's', 'S'), (0, 0o1000, 't', 'T')]
    {
        let bits = (mode >> shift) & 7;
        out.push(if bits & 4 != 0 { 'r' } else { '-' });
        out.push(if bits & 2 != 0 { 'w' } else { '-' });
        let x = bits & 1 != 0;
        out.push(match (mode & special != 0, x) {
            (true, true) => set,
            (true, false) => unset,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    out
}

/// The page shell: head, the navigation (when signed in), the body.
pub fn page(title: &str, signed_in: bool, body: &str) -> String {
    let nav = if signed_in {
        r#"<nav aria-label="Main"><a href="/ui/">Add-ons</a> <a href="/ui/upload">Upload</a>
<form method="post" action="/ui/logout" class="inline"><button type="submit" id="sign-out">Sign out</button></form></nav>"#
    } else {
        ""
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · addonfs</title>
<link rel="stylesheet" href="/ui/assets/style.css">
<script src="/ui/assets/ui.js" defer></script>
</head><body>
<header><span class="brand">addonfs</span>{nav}</header>
<main id="main">
{body}
</main></body></html>
"#,
        title = esc(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<img src=x onerror=alert(1)>"'&"#),
            "&lt;img src=x onerror=alert(1)&gt;&quot;&#39;&amp;"
        );
        assert_eq!(esc_bytes(b"a\xffb<"), "a\u{fffd}b&lt;");
    }

    proptest::proptest! {
        /// Whatever an add-on names, the escaped text holds no markup and means the same.
        #[test]
        fn escaped_text_has_no_markup(text in proptest::prelude::any::<String>()) {
            let e = esc(&text);
            proptest::prop_assert!(!e.contains(['<', '>', '"', '\'']));
            let back = e
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&amp;", "&");
            proptest::prop_assert_eq!(back, text);
        }

        /// A percent-encoded value holds only URL-safe characters and decodes to the text.
        #[test]
        fn url_values_round_trip(text in proptest::prelude::any::<String>()) {
            let u = url(&text);
            proptest::prop_assert!(u.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~/%".contains(&b)));
            let mut bytes = Vec::new();
            let raw = u.as_bytes();
            let mut i = 0;
            while i < raw.len() {
                if raw[i] == b'%' {
                    let hex = std::str::from_utf8(&raw[i + 1..i + 3]).unwrap();
                    bytes.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 3;
                } else {
                    bytes.push(raw[i]);
                    i += 1;
                }
            }
            proptest::prop_assert_eq!(String::from_utf8(bytes).unwrap(), text);
        }
    }

    #[test]
    fn formats() {
        assert_eq!(size(213), "213 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(mode(0o755), "rwxr-xr-x");
        assert_eq!(mode(0o4755), "rwsr-xr-x");
        assert_eq!(mode(0o1777), "rwxrwxrwt");
        assert_eq!(url("/a b/<x>&y"), "/a%20b/%3Cx%3E%26y");
    }
}
