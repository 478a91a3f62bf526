//! Sizes of the in-memory secret volume: Kubernetes byte quantities (`64Mi`, `1G`, `1.5Gi`,
//! `1048576`), parsed into bytes, and how a tmpfs charges files (whole pages), so the webhook
//! that sizes the volume and the agent that writes into it count the same way.

/// What a tmpfs charges a file for: whole pages of this size.
pub const PAGE_BYTES: u64 = 4096;
/// One mebibyte: volume sizes are rounded up to whole Mi.
pub const MI: u64 = 1 << 20;
/// Largest volume a pod's `volume-size-limit` annotation may ask for: it counts against the
/// pod's memory, and no plan of the grammar needs more than a few tens of Mi.
pub const MAX_STATED_BYTES: u64 = 1 << 30;
/// Largest value Parameter Store stores (an advanced parameter; a standard one holds 4 KiB).
pub const MAX_PARAMETER_BYTES: u64 = 8192;
/// How many files a `split` secret is assumed to write when the volume is sized from the plan:
/// a value of 65,536 bytes could hold ten thousand one-byte keys, each a page of its own, so
/// the bound is an assumption (TLS bundles and credentials have a handful of keys). A secret
/// with more keys may need a stated `volume-size-limit`; the agent says so, with the size.
pub const SPLIT_FILES_ASSUMED: u64 = 32;
/// Headroom over what two complete sets need, in quarters (5/4: 25 % more).
const HEADROOM_QUARTERS: u64 = 5;

/// Parse a Kubernetes quantity of bytes: a decimal number (optionally with a fraction) and an
/// optional binary (`Ki`, `Mi`, `Gi`, `Ti`, `Pi`, `Ei`) or decimal (`k`, `M`, `G`, `T`, `P`,
/// `E`) suffix. A fraction of a byte is rounded up, as Kubernetes does. Errors say what is
/// wrong without repeating the value (the caller quotes it, shortened), for a message that names
/// the flag or annotation.
pub fn parse_bytes(value: &str) -> Result<u64, &'static str> {
    const SUFFIXES: [(&str, u64); 13] = [
        ("", 1),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
        ("E", 1_000_000_000_000_000_000),
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("Ei", 1 << 60),
    ];
    let not_a_size = || "is not a Kubernetes quantity of bytes such as 8Mi, 64Mi or 1Gi";
    let split = value
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(value.len());
    let (number, suffix) = value.split_at(split);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 18 {
        return Err(not_a_size());
    }
    let Some((_, multiplier)) = SUFFIXES.iter().find(|(s, _)| *s == suffix) else {
        return Err(not_a_size());
    };
    let too_large = || "is too large";
    let whole: u128 = whole.parse().map_err(|_| too_large())?;
    let scale = 10u128.pow(fraction.len() as u32);
    let fraction: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().map_err(|_| not_a_size())?
    };
    let multiplier = u128::from(*multiplier);
    let bytes = whole
        .checked_mul(multiplier)
        .and_then(|b| b.checked_add((fraction * multiplier).div_ceil(scale)))
        .ok_or_else(too_large)?;
    u64::try_from(bytes).map_err(|_| too_large())
}

/// `bytes` as Kubernetes writes a quantity: `NGi`, `NMi` or `NKi` when it is a whole number of
/// them, else plain bytes.
pub fn quantity(bytes: u64) -> String {
    if bytes != 0 && bytes.is_multiple_of(1 << 30) {
        format!("{}Gi", bytes >> 30)
    } else if bytes != 0 && bytes.is_multiple_of(MI) {
        format!("{}Mi", bytes / MI)
    } else if bytes != 0 && bytes.is_multiple_of(1024) {
        format!("{}Ki", bytes / 1024)
    } else {
        bytes.to_string()
    }
}

/// The pages a tmpfs charges for a file of `bytes` (an empty file: none).
pub fn pages(bytes: u64) -> u64 {
    bytes.div_ceil(PAGE_BYTES)
}

/// The pages of the symlinks beside the sets, for a set whose top-level names are `tops`
/// (each once): `..data`, one more while a link is swapped, and a page for each link
/// `..data/<name>` too long for a tmpfs to keep in the inode (128 bytes with its NUL).
pub fn link_pages<'a>(tops: impl IntoIterator<Item = &'a str>) -> u64 {
    const SHORT_SYMLINK_BYTES: usize = 128;
    1 + tops
        .into_iter()
        .filter(|top| "..data/".len() + top.len() + 1 > SHORT_SYMLINK_BYTES)
        .count() as u64
}

/// The volume the webhook gives a plan whose one complete set of files takes `set_pages` pages
/// and whose symlinks beside the sets take `link_pages`: room for two sets (the agent writes a
/// new set beside the old one, then swaps `..data`), 25 % headroom, in whole Mi, at least 1 Mi.
pub fn volume_for(set_pages: u64, link_pages: u64) -> u64 {
    let needed = needed_for(set_pages, link_pages);
    (needed.saturating_mul(HEADROOM_QUARTERS) / 4)
        .div_ceil(MI)
        .max(1)
        .saturating_mul(MI)
}

/// The least a volume must hold for such a plan: two sets and the symlinks, no headroom.
pub fn needed_for(set_pages: u64, link_pages: u64) -> u64 {
    set_pages
        .saturating_mul(2)
        .saturating_add(link_pages)
        .saturating_mul(PAGE_BYTES)
}

/// `bytes` for a message: `1.5 MiB`, `68 KiB`, `512 bytes`.
pub fn human(bytes: u64) -> String {
    if bytes >= MI {
        let tenths = (bytes * 10).div_ceil(MI);
        if tenths.is_multiple_of(10) {
            format!("{} MiB", tenths / 10)
        } else {
            format!("{}.{} MiB", tenths / 10, tenths % 10)
        }
    } else if bytes >= 1024 {
        format!("{} KiB", bytes.div_ceil(1024))
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_with_binary_and_decimal_suffixes_and_fractions_round_up() {
        for (value, bytes) in [
            ("1Mi", MI),
            ("64Mi", 64 * MI),
            ("1Gi", 1 << 30),
            ("512Ki", 512 * 1024),
            ("1M", 1_000_000),
            ("2k", 2000),
            ("1G", 1_000_000_000),
            ("1048576", MI),
            ("1.5Mi", 3 * MI / 2),
            ("0.5Ki", 512),
            ("1.0001", 2),
            ("8Ei", 8 << 60),
        ] {
            assert_eq!(parse_bytes(value), Ok(bytes), "{value}");
        }
        for value in [
            "", "Mi", "1mi", "1MB", "1 Mi", "-1Mi", "1.Mi.", "1e6", "1m", ".5Mi", "1..2", "0x10",
            "１Mi",
        ] {
            let error = parse_bytes(value).unwrap_err();
            assert!(
                error.contains("is not a Kubernetes quantity"),
                "{value}: {error}"
            );
        }
        assert!(parse_bytes("16Ei").unwrap_err().contains("too large"));
        assert!(
            parse_bytes("99999999999999999999999999999999999999999")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn quantities_print_in_the_largest_whole_unit() {
        assert_eq!(quantity(MI), "1Mi");
        assert_eq!(quantity(3 * MI), "3Mi");
        assert_eq!(quantity(1536 * 1024), "1536Ki");
        assert_eq!(quantity(1000), "1000");
        assert_eq!(quantity(2 << 30), "2Gi");
        for bytes in [1, 4096, MI, 5 * MI + 1] {
            assert_eq!(parse_bytes(&quantity(bytes)), Ok(bytes));
        }
    }

    #[test]
    fn pages_are_whole_and_the_volume_holds_two_sets_with_headroom() {
        assert_eq!(pages(0), 0);
        assert_eq!(pages(1), 1);
        assert_eq!(pages(4096), 1);
        assert_eq!(pages(4097), 2);
        assert_eq!(pages(65_536), 16);
        // One 64 KiB secret and its versions file: 17 pages a set, well within 1 Mi.
        assert_eq!(needed_for(17, 1), 35 * PAGE_BYTES);
        assert_eq!(volume_for(17, 1), MI);
        // 100 such secrets: 1,604 pages a set, 12.5 MiB for two, 15.7 MiB with headroom.
        assert_eq!(volume_for(1604, 1), 16 * MI);
        assert!(volume_for(1604, 1) >= needed_for(1604, 1) * 5 / 4);
        assert_eq!(human(35 * PAGE_BYTES), "140 KiB");
        assert_eq!(human(needed_for(1604, 1)), "12.6 MiB");
        assert_eq!(human(MI), "1 MiB");
    }
}
