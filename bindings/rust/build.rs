//! Links librwkvpeft. The folder holding librwkvpeft.so comes from $RWKVPEFT_LIB_DIR
//! (default: ../../build, the CMake build tree of this repository). An rpath to that folder
//! is added so that tests and examples run without LD_LIBRARY_PATH.
use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=RWKVPEFT_LIB_DIR");
    println!("cargo:rerun-if-changed=build.rs");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let dir = match env::var_os("RWKVPEFT_LIB_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => manifest.join("../../build"),
    };
    let dir = dir.canonicalize().unwrap_or_else(|e| {
        panic!(
            "librwkvpeft folder {} not found ({e}): build the C library first \
             (cmake -S . -B build && cmake --build build) or set RWKVPEFT_LIB_DIR",
            dir.display()
        )
    });
    if !dir.join("librwkvpeft.so").exists() {
        println!("cargo:warning=no librwkvpeft.so in {} (set RWKVPEFT_LIB_DIR)", dir.display());
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=dylib=rwkvpeft");
    // tests, examples and binaries of this crate find the library without LD_LIBRARY_PATH
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    // exported to dependents (links = "rwkvpeft"): DEP_RWKVPEFT_LIB_DIR
    println!("cargo:lib_dir={}", dir.display());
}
