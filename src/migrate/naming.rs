//! Output names, following the Hugging Face ecosystem, and which file names are what.

use std::path::Path;

use crate::default_output;

/// Extensions a torch checkpoint may carry (the content is sniffed before anything is trusted).
pub const CANDIDATE_EXTENSIONS: &[&str] = &["pt", "pth", "bin", "ckpt", "pkl"];

/// True when `file_name` has one of [`CANDIDATE_EXTENSIONS`].
pub fn is_candidate(file_name: &str) -> bool {
    Path::new(file_name)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| {
            CANDIDATE_EXTENSIONS
                .iter()
                .any(|c| e.eq_ignore_ascii_case(c))
        })
}

/// Why a file is training state rather than weights, or `None` when it is not.
///
/// The transformers `Trainer` writes `training_args.bin`, `optimizer.pt`, `scheduler.pt`,
/// `scaler.pt` and `rng_state*.pth`; accelerate writes `optimizer*.bin`, `scheduler*.bin` and
/// `random_states_*.pkl`.
pub fn training_state(file_name: &str) -> Option<&'static str> {
    let lower = file_name.to_ascii_lowercase();
    let (stem, ext) = lower.rsplit_once('.').unwrap_or((lower.as_str(), ""));
    let hit = match ext {
        "bin" => {
            stem == "training_args"
                || stem.starts_with("optimizer")
                || stem.starts_with("scheduler")
        }
        "pt" => {
            matches!(stem, "optimizer" | "scheduler" | "scaler") || stem.starts_with("optimizer")
        }
        "pth" => stem.starts_with("rng_state"),
        "pkl" => stem.starts_with("random_states"),
        _ => false,
    };
    hit.then_some(match stem {
        "training_args" => "training arguments (training_args.bin), not weights",
        s if s.starts_with("optimizer") => "optimizer state, not weights",
        s if s.starts_with("scheduler") => "learning-rate scheduler state, not weights",
        "scaler" => "gradient scaler state, not weights",
        _ => "random number generator state, not weights",
    })
}

/// The output file name of the checkpoint `file_name`: `pytorch_model.bin` →
/// `model.safetensors`, `pytorch_model-00001-of-00003.bin` → `model-00001-of-00003.safetensors`,
/// `diffusion_pytorch_model.bin` → `diffusion_pytorch_model.safetensors`, `adapter_model.bin` →
/// `adapter_model.safetensors`, anything else `NAME.ext` → `NAME.safetensors`.
pub fn output_name(file_name: &str) -> String {
    default_output(Path::new(file_name))
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The stem shards and indexes are named after: `model` for `pytorch_model.bin`,
/// `diffusion_pytorch_model` for `diffusion_pytorch_model.bin`, `last` for `last.ckpt`.
pub fn shard_base(file_name: &str) -> String {
    let out = output_name(file_name);
    out.strip_suffix(".safetensors").unwrap_or(&out).to_string()
}

pub use crate::pipeline::shard::{index_name, shard_name};

/// For a pickle index (`pytorch_model.bin.index.json`, `diffusion_pytorch_model.bin.index.json`,
/// `X.pt.index.json`): the shard base of its safetensors counterpart (`model`, …).
pub fn pickle_index_base(file_name: &str) -> Option<String> {
    let weights = file_name.strip_suffix(".index.json")?;
    is_candidate(weights).then(|| shard_base(weights))
}

/// True for the temporary files outputs are written through (`.NAME.XXXXXX.partial`).
pub fn is_partial(file_name: &str) -> bool {
    file_name.starts_with('.') && file_name.ends_with(".partial")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_ecosystem() {
        let cases = [
            ("pytorch_model.bin", "model.safetensors"),
            (
                "pytorch_model-00001-of-00003.bin",
                "model-00001-of-00003.safetensors",
            ),
            (
                "diffusion_pytorch_model.bin",
                "diffusion_pytorch_model.safetensors",
            ),
            (
                "diffusion_pytorch_model.fp16.bin",
                "diffusion_pytorch_model.fp16.safetensors",
            ),
            ("adapter_model.bin", "adapter_model.safetensors"),
            ("last.ckpt", "last.safetensors"),
            ("weights.pth", "weights.safetensors"),
        ];
        for (i, o) in cases {
            assert_eq!(output_name(i), o, "{i}");
        }
    }

    #[test]
    fn shard_and_index_names() {
        assert_eq!(shard_base("pytorch_model.bin"), "model");
        assert_eq!(
            shard_name("model", 2, 3),
            "model-00002-of-00003.safetensors"
        );
        assert_eq!(index_name("model"), "model.safetensors.index.json");
        assert_eq!(
            pickle_index_base("pytorch_model.bin.index.json").as_deref(),
            Some("model")
        );
        assert_eq!(
            pickle_index_base("diffusion_pytorch_model.bin.index.json").as_deref(),
            Some("diffusion_pytorch_model")
        );
        assert_eq!(pickle_index_base("model.safetensors.index.json"), None);
    }

    #[test]
    fn training_state_is_recognised() {
        for f in [
            "training_args.bin",
            "optimizer.pt",
            "scheduler.pt",
            "scaler.pt",
            "rng_state.pth",
            "rng_state_3.pth",
            "optimizer.bin",
            "random_states_0.pkl",
        ] {
            assert!(training_state(f).is_some(), "{f}");
        }
        for f in [
            "pytorch_model.bin",
            "model.pt",
            "adapter_model.bin",
            "scaler.bin.json",
        ] {
            assert!(training_state(f).is_none(), "{f}");
        }
    }
}
