//! Split GGUF file names: `<prefix>-00001-of-00003.gguf` (5 digits, 1-based).

/// `(prefix, number, count)` when `file` is a shard name.
pub fn parse_shard_name(file: &str) -> Option<(&str, u32, u32)> {
    let stem = file.strip_suffix(".gguf").or_else(|| file.strip_suffix(".GGUF"))?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (prefix, no) = rest.rsplit_once('-')?;
    if no.len() != 5 || count.len() != 5 || !no.bytes().all(|b| b.is_ascii_digit()) || !count.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (no, count) = (no.parse().ok()?, count.parse().ok()?);
    (no >= 1 && no <= count && !prefix.is_empty()).then_some((prefix, no, count))
}

/// The name of shard `no` (1-based) of `count`.
pub fn shard_name(prefix: &str, no: u32, count: u32) -> String {
    format!("{prefix}-{no:05}-of-{count:05}.gguf")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names() {
        assert_eq!(parse_shard_name("m-Q4-00002-of-00003.gguf"), Some(("m-Q4", 2, 3)));
        assert_eq!(parse_shard_name("dir/m-00001-of-00001.gguf"), Some(("dir/m", 1, 1)));
        assert_eq!(parse_shard_name("m-00004-of-00003.gguf"), None);
        assert_eq!(parse_shard_name("m-1-of-3.gguf"), None);
        assert_eq!(parse_shard_name("m.gguf"), None);
        assert_eq!(shard_name("x", 1, 12), "x-00001-of-00012.gguf");
    }
}
