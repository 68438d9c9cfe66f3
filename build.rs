//! Build script: links the binary against the interpreter pinned by `PYO3_PYTHON` and records
//! where that interpreter lives, so the embedded runtime finds its standard library even when
//! started with an empty environment (`env -i`, cron, CI). It also compiles the support module
//! with that interpreter: compiling it at every start was a seventh of `model test`.

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
    precompile_support(config.executable());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/python/support.py");
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}

/// Writes `OUT_DIR/support.marshal`: the interpreter's cache tag (`cpython-311`), a newline, and
/// the marshalled code of `src/python/support.py`. Empty when no interpreter can do it; the
/// runtime then compiles the source, as it does when its interpreter's tag differs.
fn precompile_support(python: Option<&str>) {
    let out = std::path::Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("support.marshal");
    let script = "import marshal, sys\n\
        src = open(sys.argv[1], encoding='utf-8').read()\n\
        code = compile(src, '<lfeval-support>', 'exec')\n\
        data = sys.implementation.cache_tag.encode() + b'\\n' + marshal.dumps(code)\n\
        open(sys.argv[2], 'wb').write(data)\n";
    let compiled = python.is_some_and(|python| {
        std::process::Command::new(python)
            .args(["-c", script, "src/python/support.py"])
            .arg(&out)
            .status()
            .is_ok_and(|status| status.success())
    });
    if !compiled {
        std::fs::write(&out, b"").expect("cannot write to OUT_DIR");
    }
}
