//! Values read from Redis are byte strings of any length and content: not
//! necessarily UTF-8, not necessarily a number that fits, possibly empty.
//! The helpers here turn them into what the daemon uses without ever
//! panicking, and say what was decided when the stored value could not be
//! used as it stands, so that the caller can log it.

/// What a stored value comes to, and why when it is not the value as
/// stored (a default put in, a number capped): for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading<T> {
    pub value: T,
    pub note: Option<String>,
}

impl<T> Reading<T> {
    /// The stored value, used as it is.
    pub fn as_stored(value: T) -> Self {
        Reading { value, note: None }
    }

    /// A value the daemon decided on instead of the stored one.
    pub fn decided(value: T, note: String) -> Self {
        Reading {
            value,
            note: Some(note),
        }
    }
}

/// A decimal whole number (ASCII digits, surrounding blanks and one leading
/// `+` allowed), saturating at `u64::MAX` however many digits there are.
/// `None` for anything else: empty, negative, `NaN`, hex, not UTF-8.
pub fn decimal(raw: &[u8]) -> Option<u64> {
    let text = raw.trim_ascii();
    let digits = text.strip_prefix(b"+").unwrap_or(text);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// Longest stretch of a stored value quoted in a log line.
const SHOWN_MAX: usize = 64;

/// `raw` quoted for a log line: non-printable and non-ASCII bytes escaped
/// (`\xff`), cut to [`SHOWN_MAX`] bytes so a huge value cannot flood the log.
pub fn shown(raw: &[u8]) -> String {
    let cut = &raw[..raw.len().min(SHOWN_MAX)];
    let more = if raw.len() > SHOWN_MAX {
        format!("... ({} bytes)", raw.len())
    } else {
        String::new()
    };
    format!("\"{}\"{more}", cut.escape_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_saturate_and_refuse_what_is_not_one() {
        assert_eq!(decimal(b"0"), Some(0));
        assert_eq!(decimal(b" +42\n"), Some(42));
        assert_eq!(decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(decimal(b"18446744073709551616"), Some(u64::MAX));
        assert_eq!(decimal(&[b'9'; 10_000]), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"  ",
            b"-1",
            b"+",
            b"NaN",
            b"inf",
            b"1e3",
            b"0x10",
            b"1.5",
            b"\xff\xfe",
            b"12\x0034",
        ] {
            assert_eq!(decimal(bad), None, "{}", shown(bad));
        }
    }

    #[test]
    fn shown_escapes_and_cuts() {
        assert_eq!(shown(b"DEBUG"), "\"DEBUG\"");
        assert_eq!(shown(b"\xff\n"), "\"\\xff\\n\"");
        let long = shown(&[b'a'; 1000]);
        assert!(long.ends_with("... (1000 bytes)"), "{long}");
        assert!(long.len() < 100, "{long}");
    }
}
