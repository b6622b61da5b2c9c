//! Builds `native/schema_grammar.cpp` (llama.cpp's JSON Schema converter with its error
//! message kept) against the llama.cpp tree llama-cpp-sys-2 builds. That crate exports no
//! include path, but it does export its CMake package directory (DEP_LLAMA_GGML_CMAKE_DIR,
//! `<out>/lib/cmake`), and the CMake cache beside it names the source tree.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=native/schema_grammar.cpp");
    println!("cargo:rerun-if-env-changed=DEP_LLAMA_GGML_CMAKE_DIR");
    let source = llama_source().unwrap_or_else(|why| {
        panic!("cannot find the llama.cpp sources llama-cpp-sys-2 built: {why}")
    });
    cc::Build::new()
        .cpp(true)
        .file("native/schema_grammar.cpp")
        .include(source.join("common"))
        .include(source.join("include"))
        .include(source.join("ggml/include"))
        .include(source.join("vendor"))
        .flag_if_supported("-std=c++17")
        .pic(true)
        .warnings(false)
        .compile("warren_schema_grammar");
}

/// The llama.cpp source directory, from the CMake cache of llama-cpp-sys-2's build.
fn llama_source() -> Result<PathBuf, String> {
    let cmake_dir = std::env::var("DEP_LLAMA_GGML_CMAKE_DIR")
        .map_err(|_| "llama-cpp-sys-2 did not export DEP_LLAMA_GGML_CMAKE_DIR".to_owned())?;
    // <out>/lib/cmake → <out>/build/CMakeCache.txt
    let out = Path::new(&cmake_dir)
        .ancestors()
        .nth(2)
        .ok_or_else(|| format!("{cmake_dir} has no parent"))?;
    let cache = out.join("build").join("CMakeCache.txt");
    let text = std::fs::read_to_string(&cache)
        .map_err(|e| format!("cannot read {}: {e}", cache.display()))?;
    text.lines()
        .find_map(|line| line.strip_prefix("CMAKE_HOME_DIRECTORY:INTERNAL="))
        .map(PathBuf::from)
        .filter(|source| source.join("common/json-schema-to-grammar.h").is_file())
        .ok_or_else(|| format!("{} names no llama.cpp tree", cache.display()))
}
