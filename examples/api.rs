//! The library API in a few lines: open a checkpoint, list what `convert` would write, read one
//! tensor, convert, and verify the result.
//!
//! ```text
//! cargo run --example api -- tests/fixtures/ckpt/lightning.ckpt /tmp/lightning.safetensors
//! ```

use std::path::PathBuf;

use safetensorize::verify::{VerifyOptions, verify};
use safetensorize::{Checkpoint, ConvertOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let input = args
        .next()
        .unwrap_or_else(|| "tests/fixtures/ckpt/lightning.ckpt".into());
    let output = args
        .next()
        .unwrap_or_else(|| std::env::temp_dir().join("api-example.safetensors"));

    // Only the pickle is read here; nothing in it is executed.
    let ckpt = Checkpoint::open(&input)?;
    let sel = ckpt.select(None, false)?;
    println!(
        "{}: {} tensors under {:?}",
        input.display(),
        sel.tensors.len(),
        sel.key
    );
    for t in &sel.tensors {
        println!(
            "  {:<40} {:<9} {:?} {} bytes",
            t.name,
            t.dtype.to_string(),
            t.shape,
            t.nbytes
        );
    }
    for (alias, kept) in &sel.aliases {
        println!("  {alias} is {kept}");
    }

    if let Some(first) = sel.tensors.first() {
        let bytes = ckpt.read_tensor(&sel, &first.name)?;
        println!(
            "{}: first bytes {:02x?}",
            first.name,
            &bytes[..bytes.len().min(8)]
        );
    }

    let opts = ConvertOptions {
        overwrite: true,
        ..ConvertOptions::default()
    };
    let report = ckpt.write(&sel, &output, &opts, &|_| {})?;
    println!("wrote {} ({} bytes)", report.output.display(), report.bytes);

    let check = verify(&input, &output, &VerifyOptions::default(), &|_| {})?;
    println!(
        "verify: {}",
        if check.ok { "identical" } else { "DIFFERENT" }
    );
    Ok(())
}
