//! Build script: links the binary against the interpreter pinned by `PYO3_PYTHON` and records
//! where that interpreter lives, so the embedded runtime finds its standard library even when
//! started with an empty environment (`env -i`, cron, CI).

fn main() {
    // An rpath to `<prefix>/lib` lets the binary load libpython without `LD_LIBRARY_PATH`.
    pyo3_build_config::add_libpython_rpath_link_args();
    let config = pyo3_build_config::get();
    if let Some(dir) = config.lib_dir() {
        println!("cargo:rustc-env=LFEVAL_PY_LIBDIR={dir}");
    }
    if let Some(exe) = config.executable() {
        println!("cargo:rustc-env=LFEVAL_PY_EXE={exe}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}
