//! CONFIG_DB `DEVICE_METADATA|localhost` `switch_type`: absent means
//! `switch`; only `dpu` changes portsyncd's start-up rule (contract
//! section 5). The value is compared as bytes, exactly, as upstream
//! compares its `std::string`, so no stored value can fail to decode.

use super::redis_value::shown;

/// What an absent `switch_type` means.
pub const DEFAULT_SWITCH_TYPE: &[u8] = b"switch";

/// Whether `switch_type` (as stored, `None` when absent) names a DPU.
pub fn is_dpu(raw: Option<&[u8]>) -> bool {
    raw == Some(b"dpu")
}

/// `switch_type` for the log: the stored bytes quoted and escaped, or the
/// default when absent.
pub fn describe(raw: Option<&[u8]>) -> String {
    shown(raw.unwrap_or(DEFAULT_SWITCH_TYPE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dpu_exactly_is_a_dpu() {
        assert!(is_dpu(Some(b"dpu")));
        for other in [
            &b"DPU"[..],
            b"dpu ",
            b"",
            b"switch",
            b"\xffdpu",
            b"18446744073709551615",
        ] {
            assert!(!is_dpu(Some(other)), "{}", shown(other));
        }
        assert!(!is_dpu(None));
        assert_eq!(describe(None), "\"switch\"");
        assert_eq!(describe(Some(b"\xfe")), "\"\\xfe\"");
    }
}
