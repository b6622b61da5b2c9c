//! Builds warren's native shims against the llama.cpp tree that llama-cpp-sys-2 builds:
//! `native/schema_grammar.cpp` (llama.cpp's JSON Schema converter with its error message
//! kept), `native/chat.cpp` (llama.cpp's chat templates, tool-call grammars and parsers) and
//! `native/grammar_rules.cpp` (llama.cpp's GBNF parser, from its `src/`). That crate exports no
//! include path, so the tree is found where the crate's package keeps it: `cargo metadata`
//! names the package's manifest, and the crate ships llama.cpp in its `llama.cpp/` folder.

use std::path::PathBuf;

/// The package whose llama.cpp warren's native code must be compiled against.
const SYS_CRATE: &str = "llama-cpp-sys-2";

fn main() {
    println!("cargo:rerun-if-changed=native/schema_grammar.cpp");
    println!("cargo:rerun-if-changed=native/chat.cpp");
    println!("cargo:rerun-if-changed=native/grammar_rules.cpp");
    println!("cargo:rerun-if-changed=Cargo.lock");
    let source = llama_source()
        .unwrap_or_else(|why| panic!("cannot find the llama.cpp sources {SYS_CRATE} built: {why}"));
    cc::Build::new()
        .cpp(true)
        .file("native/schema_grammar.cpp")
        .file("native/chat.cpp")
        .file("native/grammar_rules.cpp")
        .include(source.join("common"))
        .include(source.join("src"))
        .include(source.join("include"))
        .include(source.join("ggml/include"))
        .include(source.join("vendor"))
        .flag_if_supported("-std=c++17")
        .pic(true)
        .warnings(false)
        .compile("warren_native");
}

/// The llama.cpp source directory of the llama-cpp-sys-2 package in this build's dependency
/// graph (exactly one version: Cargo.lock pins it).
fn llama_source() -> Result<PathBuf, String> {
    // The target's dependencies only. `cargo metadata` resolves dev-dependencies too: --locked
    // keeps the resolution to Cargo.lock's versions (it does not stop downloads), and an
    // offline build (CARGO_NET_OFFLINE, `--offline`) asks metadata not to go online either.
    let target = std::env::var("TARGET").map_err(|_| "cargo set no TARGET".to_owned())?;
    let mut options = vec![
        "--locked".to_owned(),
        "--filter-platform".to_owned(),
        target,
    ];
    if std::env::var("CARGO_NET_OFFLINE").is_ok_and(|v| v == "true") {
        options.push("--offline".to_owned());
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .other_options(options)
        .exec()
        .map_err(|e| format!("`cargo metadata` failed: {e}"))?;
    let mut packages = metadata
        .packages
        .iter()
        .filter(|p| p.name.as_str() == SYS_CRATE);
    let package = packages
        .next()
        .ok_or_else(|| format!("{SYS_CRATE} is not in the dependency graph"))?;
    if let Some(other) = packages.next() {
        return Err(format!(
            "two versions of {SYS_CRATE} in the graph ({} and {})",
            package.version, other.version
        ));
    }
    let source = package
        .manifest_path
        .parent()
        .ok_or_else(|| format!("{} has no folder", package.manifest_path))?
        .join("llama.cpp");
    let header = source.join("common/json-schema-to-grammar.h");
    if !header.is_file() {
        return Err(format!("{header} is missing"));
    }
    Ok(source.into_std_path_buf())
}
