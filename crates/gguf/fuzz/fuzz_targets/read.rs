//! Fuzz target: arbitrary bytes into `Gguf::read`. A parse may fail, but never panic, overflow
//! or allocate out of proportion to the input; a header that parses must survive every accessor
//! and `check_data_fits`, and its metadata must survive a trip through the writer.

#![no_main]

use hearth_gguf::{type_block_size, type_name, Gguf, GgufWriter, Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    match Gguf::read(data, Some(len)) {
        Ok(g) => exercise(&g, len),
        Err(e) => drop(e.to_string()),
    }
    // Without a length, only the count caps and the end of the input bound the reader.
    if let Err(e) = Gguf::read(data, None) {
        drop(e.to_string());
    }
});

fn exercise(g: &Gguf, len: u64) {
    for file_len in [0, len, g.data_offset, u64::MAX] {
        if let Err(e) = g.check_data_fits(file_len) {
            drop(e.to_string());
        }
    }
    let _ = (g.architecture(), g.split_count(), g.split_no());
    let _ = (g.arch_u64("context_length"), g.arch_u64("block_count"));
    for (key, value) in &g.metadata {
        assert!(g.get(key).is_some());
        let _ = (g.get_str(key), g.get_u64(key));
        visit(value);
    }
    for t in &g.tensors {
        let _ = (t.n_elements(), t.checked_n_elements(), t.n_bytes());
        let _ = (type_name(t.ggml_type), type_block_size(t.ggml_type));
        // `read` accepts only shapes whose size can be computed.
        if type_block_size(t.ggml_type).is_some() {
            assert!(t.n_bytes().is_some(), "{t:?}");
        }
    }
    assert_eq!(g.data_offset % g.alignment, 0);
    round_trip_metadata(g);
}

fn visit(v: &Value) {
    let _ = (v.as_u64(), v.as_str(), v.gguf_type(), v.to_string());
    if let Some(items) = v.as_array() {
        items.iter().for_each(visit);
    }
}

/// What the reader accepts and the writer can write (the writer is stricter: no empty keys,
/// `general.alignment` only as a u32) must read back the same.
fn round_trip_metadata(g: &Gguf) {
    let mut w = GgufWriter::new();
    for (k, v) in &g.metadata {
        w.set(k.as_str(), v.clone());
    }
    // A huge `general.alignment` is valid and makes a file that much padding long: skip those.
    match w.layout() {
        Ok(layout) if layout.file_len <= 1 << 20 => {}
        _ => return,
    }
    let bytes = w.to_bytes().expect("a planned file writes");
    let back = Gguf::read(&bytes[..], Some(bytes.len() as u64)).expect("the writer's output reads");
    // Debug, not ==, so that NaN equals NaN.
    assert_eq!(format!("{:?}", back.metadata), format!("{:?}", g.metadata));
    assert_eq!(back.alignment, g.alignment);
}
