//! Byte sizes as written in the config: `512KiB`, `10MB`, `1GiB`, `800B`.

/// Parses `<digits><unit>`, units `B`, `KB`/`MB`/`GB` (powers of 1000) and `KiB`/`MiB`/`GiB`
/// (powers of 1024). Bare numbers are refused: `10` could be bytes or megabytes.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 15 {
        return None;
    }
    let value: u64 = text[..digits].parse().ok()?;
    let factor: u64 = match &text[digits..] {
        "B" => 1,
        "KB" => 1000,
        "MB" => 1000 * 1000,
        "GB" => 1000 * 1000 * 1000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    value.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn units_and_refusals() {
        assert_eq!(parse_size("800B"), Some(800));
        assert_eq!(parse_size("16KiB"), Some(16 * 1024));
        assert_eq!(parse_size("10MB"), Some(10_000_000));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        for bad in ["", "10", "MB", "1.5MB", "-1MB", "10 MB", "10mb", "10TB"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }
}
