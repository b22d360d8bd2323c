//! Builds `cpp/chat_shim.cpp`, hearth's bridge to llama.cpp's chat code, and
//! `cpp/mtp_shim.cpp`, its bridge to a model's multi-token-prediction layers, against the llama.cpp
//! that `llama-cpp-sys-2` built: its headers are found through the CMake cache of that build
//! (the sys crate tells its dependents where its CMake package lives, `DEP_LLAMA_GGML_CMAKE_DIR`).

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=cpp/chat_shim.cpp");
    println!("cargo:rerun-if-changed=cpp/mtp_shim.cpp");
    println!("cargo:rerun-if-env-changed=DEP_LLAMA_GGML_CMAKE_DIR");
    let cmake_dir = PathBuf::from(
        std::env::var("DEP_LLAMA_GGML_CMAKE_DIR").expect("llama-cpp-sys-2 tells where its build is (DEP_LLAMA_GGML_CMAKE_DIR)"),
    );
    // <out>/lib/cmake -> <out>
    let out = cmake_dir.parent().and_then(Path::parent).expect("the sys crate's build directory").to_path_buf();
    let src = llama_source(&out);
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .file("cpp/chat_shim.cpp")
        .file("cpp/mtp_shim.cpp")
        .include(out.join("include"))
        .include(src.join("include"))
        // llama-ext.h: the staging API of the MTP hidden states.
        .include(src.join("src"))
        .include(src.join("ggml/include"))
        .include(src.join("common"))
        .include(src.join("vendor"))
        .warnings(false)
        .compile("hearth_chat_shim");
}

/// The llama.cpp source directory the sys crate configured: CMake's home directory.
fn llama_source(out: &Path) -> PathBuf {
    let cache = out.join("build").join("CMakeCache.txt");
    let text = std::fs::read_to_string(&cache).unwrap_or_else(|e| panic!("cannot read {}: {e}", cache.display()));
    let home = text
        .lines()
        .find_map(|l| l.strip_prefix("CMAKE_HOME_DIRECTORY:INTERNAL="))
        .unwrap_or_else(|| panic!("{} names no CMAKE_HOME_DIRECTORY", cache.display()));
    PathBuf::from(home.trim())
}
