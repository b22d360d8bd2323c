//! Writes a few small, valid GGUF files made by the writer into a folder, as seeds for the
//! fuzzer (`fuzz/README.md`) and as regression inputs: `cargo run --release -p hearth-gguf
//! --example fuzz_seeds -- DIR`.

use std::path::PathBuf;

use hearth_gguf::{GgufWriter, TensorData, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or("usage: fuzz_seeds DIR")?);
    std::fs::create_dir_all(&dir)?;

    let empty = GgufWriter::new();

    let mut llama = GgufWriter::new();
    llama
        .set("general.architecture", "llama")
        .set("general.name", "tiny")
        .set("llama.context_length", 2048u32)
        .set("llama.block_count", 1u32)
        .set("tokenizer.ggml.model", "gpt2")
        .set(
            "tokenizer.ggml.tokens",
            Value::array(["<s>", "</s>", "a", "b"]),
        )
        .set(
            "tokenizer.ggml.scores",
            Value::array([0.0f32, -1.0, -2.5, -3.0]),
        )
        .set("tokenizer.ggml.token_type", Value::array([3i32, 3, 1, 1]))
        .set("tokenizer.ggml.add_bos_token", true);
    llama.zeroed_tensor("token_embd.weight", [32, 4], 8)?; // Q8_0
    llama.zeroed_tensor("blk.0.attn_q.weight", [256, 1], 12)?; // Q4_K
    llama.zeroed_tensor("blk.0.attn_norm.weight", [32], 0)?; // F32
    llama.zeroed_tensor("output.weight", [32, 4], 1)?; // F16

    let mut every = GgufWriter::new();
    every
        .alignment(64)
        .set("u8", 1u8)
        .set("i8", -1i8)
        .set("u16", 2u16)
        .set("i16", -2i16)
        .set("u32", 3u32)
        .set("i32", -3i32)
        .set("f32", 0.5f32)
        .set("bool", false)
        .set("string", "s")
        .set("u64", 4u64)
        .set("i64", -4i64)
        .set("f64", 0.25f64)
        .set("empty", Value::Array(vec![]))
        .set(
            "nested",
            Value::Array(vec![Value::array([1u16]), Value::array(["x", "y"])]),
        );
    every.tensor("weird_type", [3], 77, TensorData::Bytes(vec![1, 2, 3]));
    every.tensor("bytes", [2], 24, TensorData::Bytes(vec![7, 8]));

    let shards = llama.split(3)?;

    let seeds = [
        ("seed-empty.gguf", &empty),
        ("seed-llama.gguf", &llama),
        ("seed-every-type.gguf", &every),
        ("seed-shard-2-of-3.gguf", &shards[1]),
    ];
    for (name, w) in seeds {
        let path = dir.join(name);
        w.write_to_path(&path)?;
        println!("{}", path.display());
    }
    Ok(())
}
