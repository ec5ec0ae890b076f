//! Sharded outputs: Hugging Face's greedy split of tensors into files no larger than a limit,
//! the shard and index names, the index's text, and the size syntax (`5GB`, `500MB`, `2GiB`,
//! `1000000`).

use std::collections::BTreeMap;

use crate::checkpoint::Selection;

/// Parses a size: a number of bytes, optionally followed by `B`, `KB`, `MB`, `GB`, `TB` (powers
/// of 1000, as Hugging Face reads them) or `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let mult: u64 = match unit.as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "tb" | "t" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "unknown size unit {unit:?} in {text:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            ));
        }
    };
    let bad = || format!("{text:?} is not a size (examples: 5GB, 500MB, 2GiB, 1000000)");
    let value = if num.contains('.') {
        let f: f64 = num.parse().map_err(|_| bad())?;
        let v = f * mult as f64;
        if !v.is_finite() || v >= u64::MAX as f64 {
            return Err(bad());
        }
        v as u64
    } else {
        num.parse::<u64>()
            .map_err(|_| bad())?
            .checked_mul(mult)
            .ok_or_else(bad)?
    };
    if value == 0 {
        return Err(format!(
            "{text:?}: the shard size must be at least one byte"
        ));
    }
    Ok(value)
}

/// Splits tensors of the given sizes, in order, into shards of at most `max` bytes each, exactly
/// as `huggingface_hub.split_state_dict_into_shards_factory` does: walk the tensors in order; a
/// tensor larger than `max` gets a shard of its own at once (before the shard being filled); a
/// tensor that would tip the current shard over `max` closes it. Returns indices into `sizes`.
pub fn plan_shards(sizes: &[u64], max: u64) -> Vec<Vec<usize>> {
    let mut shards = Vec::new();
    let mut current = Vec::new();
    let mut current_size = 0u64;
    for (i, &size) in sizes.iter().enumerate() {
        if size > max {
            shards.push(vec![i]);
            continue;
        }
        if current_size.saturating_add(size) > max && !current.is_empty() {
            shards.push(std::mem::take(&mut current));
            current_size = 0;
        }
        current.push(i);
        current_size += size;
    }
    if !current.is_empty() {
        shards.push(current);
    }
    shards
}

/// A selection's tensors split by `--max-shard-size` (one group without it); each alias goes
/// with the tensor it names, non-tensor notes with the first group.
pub fn split(sel: &Selection, max: Option<u64>) -> Vec<Selection> {
    let groups = match max {
        Some(m) => plan_shards(&sel.tensors.iter().map(|t| t.nbytes).collect::<Vec<_>>(), m),
        None => vec![(0..sel.tensors.len()).collect()],
    };
    groups
        .iter()
        .enumerate()
        .map(|(g, idx)| {
            let tensors: Vec<_> = idx.iter().map(|&i| sel.tensors[i].clone()).collect();
            let aliases = sel
                .aliases
                .iter()
                .filter(|(_, kept)| tensors.iter().any(|t| &t.name == kept))
                .cloned()
                .collect();
            let skipped = if g == 0 {
                sel.skipped.clone()
            } else {
                Vec::new()
            };
            Selection {
                key: sel.key.clone(),
                tensors,
                aliases,
                skipped,
            }
        })
        .collect()
}

/// `{base}-{i:05}-of-{n:05}.safetensors`, `i` counted from 1 (Hugging Face's pattern).
pub fn shard_name(base: &str, i: usize, n: usize) -> String {
    format!("{base}-{i:05}-of-{n:05}.safetensors")
}

/// The name of output `i` (from 1) of `n`: `{base}.safetensors` when there is only one (and no
/// index), else [`shard_name`].
pub fn output_file_name(base: &str, i: usize, n: usize) -> String {
    if n <= 1 {
        format!("{base}.safetensors")
    } else {
        shard_name(base, i, n)
    }
}

/// `{base}.safetensors.index.json`.
pub fn index_name(base: &str) -> String {
    format!("{base}.safetensors.index.json")
}

/// The text of a `model.safetensors.index.json` (Hugging Face's schema, keys sorted, 2-space
/// indent as transformers writes it): `weight_map` lists each tensor and its file name;
/// `metadata.total_size` is the sum of the tensors' bytes.
pub fn index_json(files: &[(String, Vec<(String, u64)>)]) -> (String, usize, u64) {
    let mut weight_map = BTreeMap::new();
    let mut total = 0u64;
    for (file, tensors) in files {
        for (name, bytes) in tensors {
            weight_map.insert(name.clone(), file.clone());
            total += bytes;
        }
    }
    let doc = serde_json::json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
    (text, weight_map.len(), total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_hugging_face() {
        assert_eq!(parse_size("5GB"), Ok(5_000_000_000));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("200B"), Ok(200));
        assert_eq!(parse_size("1.5gb"), Ok(1_500_000_000));
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("99999999999999999999TB").is_err());
    }

    /// `huggingface_hub` tests/test_serialization.py `test_multiple_shards`: sizes 6, 10, 30, 2, 2
    /// with a limit of 10 give [1], [3], [2], [4, 5] (the big tensor jumps the queue).
    #[test]
    fn greedy_split_matches_hugging_face() {
        assert_eq!(
            plan_shards(&[6, 10, 30, 2, 2], 10),
            vec![vec![0], vec![2], vec![1], vec![3, 4]]
        );
        assert_eq!(
            plan_shards(&[6, 10, 30, 2, 2], 100),
            vec![vec![0, 1, 2, 3, 4]]
        );
        assert_eq!(plan_shards(&[], 10), Vec::<Vec<usize>>::new());
    }
}
