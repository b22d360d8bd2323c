//! Every file in `tests/regressions/` through the reader: inputs the fuzzer found interesting or
//! that once broke the reader. None may panic; each must parse or fail with a proper error that
//! names a byte offset. Files named `seed-*` were made by the writer (the fuzzer's seeds) and
//! must parse and fit; files named `crash-*` reproduce crashes that were fixed.

use std::path::Path;

use hearth_gguf::{Gguf, GgufError};

#[test]
fn no_regression_input_panics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() >= 4,
        "the regression inputs are missing from {}",
        dir.display()
    );
    let (mut ok, mut rejected) = (0, 0);
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let data = std::fs::read(path).unwrap();
        let len = data.len() as u64;
        let result = std::panic::catch_unwind(|| {
            let parsed = Gguf::read(&data[..], Some(len)).and_then(|g| {
                g.check_data_fits(len)?;
                Ok(g)
            });
            let unbounded = Gguf::read(&data[..], None).map(|_| ());
            (parsed, unbounded)
        });
        let Ok((parsed, unbounded)) = result else {
            panic!("{name}: the reader panicked");
        };
        for err in [parsed.as_ref().err(), unbounded.as_ref().err()]
            .into_iter()
            .flatten()
        {
            check_error(&name, err);
        }
        match parsed {
            Ok(g) => {
                ok += 1;
                // Open (from a path) agrees with read.
                let opened = Gguf::open(path).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(opened.data_offset, g.data_offset, "{name}");
                assert_eq!(opened.tensors, g.tensors, "{name}");
            }
            Err(e) => {
                rejected += 1;
                assert!(
                    !name.starts_with("seed-"),
                    "{name} was made by the writer: {e}"
                );
            }
        }
    }
    eprintln!(
        "{} regression inputs: {ok} parsed, {rejected} rejected",
        files.len()
    );
}

/// A proper error names where in the file it went wrong.
fn check_error(name: &str, err: &GgufError) {
    let msg = err.to_string();
    match err {
        GgufError::Truncated { .. } | GgufError::Malformed { .. } => {
            assert!(msg.contains("offset"), "{name}: {msg}")
        }
        GgufError::NotGguf { .. } | GgufError::Version(_) => {}
        GgufError::Io { .. } => panic!("{name}: an I/O error from a slice: {msg}"),
    }
}
