//! Bringing the interpreter up, on first use: `PYTHONHOME` when unset, the active virtualenv's
//! `site-packages` (as its own python would see them), and the support module every snippet
//! call goes through.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyModule;

use super::error::PythonError;

use super::{Lazy, PythonOptions, PythonRuntime, RuntimeInner, Support};

pub(super) const SUPPORT_PY: &str = include_str!("support.py");

pub(super) static STARTED: AtomicBool = AtomicBool::new(false);

/// Prepares the interpreter, which [`PythonRuntime`] starts on first use. Call it once, on the
/// main thread, before tokio or any other thread starts: it may set `PYTHONHOME`. A virtualenv
/// that cannot work (missing, made for another Python) is refused here, before any work.
pub fn initialize(opts: &PythonOptions) -> Result<PythonRuntime, PythonError> {
    if STARTED.swap(true, Ordering::SeqCst) {
        return Err(PythonError::AlreadyInitialized);
    }
    let venv = opts.python_env.clone().or_else(|| {
        std::env::var_os("VIRTUAL_ENV")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let site_packages = match &venv {
        Some(dir) if !dir.is_dir() => {
            return Err(PythonError::Venv {
                path: dir.clone(),
                reason: "no such directory".to_owned(),
            });
        }
        Some(dir) => {
            let (major, minor) = linked_version();
            Some(venv_site_packages(dir, major, minor)?)
        }
        None => None,
    };

    // SAFETY: Py_IsInitialized may be called at any time.
    let already_up = unsafe { ffi::Py_IsInitialized() } != 0;
    let mut home_set = false;
    if !already_up
        && std::env::var_os("PYTHONHOME").is_none()
        && let Some(home) = build_time_home()
    {
        // Without this, CPython derives its prefix from whatever `python3` is first on PATH,
        // and under `env -i` falls back to `/`, loading a foreign stdlib or none at all.
        // SAFETY: documented precondition of `initialize`: no other thread runs yet, so nothing
        // reads the environment concurrently.
        unsafe { std::env::set_var("PYTHONHOME", &home) };
        home_set = true;
    }
    Ok(PythonRuntime {
        lazy: Arc::new(Lazy {
            options: opts.clone(),
            venv,
            site_packages,
            home_set,
            started: OnceLock::new(),
            next_module: AtomicUsize::new(1),
        }),
    })
}

/// `(major, minor)` of the libpython this process loaded (callable before the interpreter
/// starts).
fn linked_version() -> (u8, u8) {
    // SAFETY: `Py_GetVersion` returns a static NUL-terminated string and is documented as safe
    // to call before initialisation.
    let version = unsafe { std::ffi::CStr::from_ptr(ffi::Py_GetVersion()) }.to_string_lossy();
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u8>().ok());
    (parts.next().unwrap_or(3), parts.next().unwrap_or(0))
}

/// Starts the interpreter: what [`PythonRuntime::started`] runs once.
pub(super) fn start(lazy: &Lazy) -> Result<RuntimeInner, PythonError> {
    let started = Instant::now();
    // SAFETY: Py_IsInitialized may be called at any time.
    let already_up = unsafe { ffi::Py_IsInitialized() } != 0;
    if !already_up {
        check_home(linked_version())?;
        // `site` runs later, from `setup`, once `sys.executable` names the virtualenv's python:
        // then it reads that `pyvenv.cfg` as the venv's own interpreter would (its packages only,
        // unless `include-system-site-packages`), instead of first running the base
        // interpreter's `.pth` files. The flag is the legacy spelling of `PyConfig.site_import`;
        // initialising from a `PyConfig` would change other defaults (signal handlers, locale).
        // SAFETY: read only by the initialisation below, which `OnceLock` runs once.
        #[allow(deprecated)]
        unsafe {
            ffi::Py_NoSiteFlag = 1;
        }
    }
    Python::initialize();
    let support = Python::attach(|py| setup(py, lazy, !already_up))?;
    Ok(RuntimeInner {
        support,
        startup: started.elapsed(),
        busy_ns: Arc::new(AtomicU64::new(0)),
        busy_calls: AtomicU64::new(0),
    })
}

/// CPython aborts the whole process when it finds no standard library; a `PYTHONHOME` without
/// one is refused here instead, with an error that says what is wrong.
fn check_home((major, minor): (u8, u8)) -> Result<(), PythonError> {
    let Some(home) = std::env::var_os("PYTHONHOME").filter(|h| !h.is_empty()) else {
        return Ok(());
    };
    // `prefix:exec_prefix`: the pure-Python part of the stdlib lives under the prefix.
    let home = home.to_string_lossy();
    let prefix = PathBuf::from(home.split(':').next().unwrap_or_default());
    // `lib64` where the build's `platlibdir` says so (Fedora); a zipped stdlib counts too.
    let found = ["lib", "lib64"].iter().any(|lib| {
        let lib = prefix.join(lib);
        lib.join(format!("python{major}.{minor}")).join("encodings").is_dir()
            || lib.join(format!("python{major}{minor}.zip")).is_file()
    });
    if found {
        return Ok(());
    }
    Err(PythonError::Home {
        stdlib: prefix
            .join("lib")
            .join(format!("python{major}.{minor}"))
            .join("encodings"),
        home: prefix,
        version: format!("{major}.{minor}"),
    })
}

/// `<prefix>` of the interpreter the binary was built against, if it still has a stdlib.
pub(super) fn build_time_home() -> Option<PathBuf> {
    let lib = Path::new(option_env!("LFEVAL_PY_LIBDIR")?);
    let has_stdlib = std::fs::read_dir(lib).ok()?.flatten().any(|entry| {
        entry.file_name().to_string_lossy().starts_with("python3") && entry.path().join("os.py").is_file()
    });
    if has_stdlib {
        lib.parent().map(Path::to_path_buf)
    } else {
        None
    }
}

pub(super) fn init_err(e: PyErr) -> PythonError {
    PythonError::Init { message: e.to_string() }
}

pub(super) fn setup(py: Python<'_>, lazy: &Lazy, run_site: bool) -> Result<Support, PythonError> {
    let site_dirs: Vec<&str> = lazy.site_packages.iter().map(String::as_str).collect();
    let mut executable = option_env!("LFEVAL_PY_EXE")
        .filter(|exe| Path::new(exe).is_file())
        .map(str::to_owned);
    if let Some(venv) = &lazy.venv {
        // Child processes started with `sys.executable` should see the same packages.
        let venv_python = venv.join("bin").join("python");
        if venv_python.exists() {
            executable = Some(venv_python.display().to_string());
        }
    }

    let module = support_module(py)?;
    let native_http = super::http::module(py).map_err(init_err)?;
    module
        .getattr("setup")
        .and_then(|f| f.call1((executable, site_dirs, lazy.home_set, native_http, run_site)))
        .map_err(init_err)?;
    let get = |name: &str| module.getattr(name).map(Bound::unbind).map_err(init_err);
    let support = Support {
        load: get("load")?,
        call_sync: get("call_sync")?,
        describe: get("describe")?,
        thread_frames: get("thread_frames")?,
        submit: get("submit")?,
        async_overdue: get("async_overdue")?,
        flush: get("flush")?,
        info: get("info")?,
        timeout_exc: get("SnippetTimeout")?,
        capture: get("Capture")?,
    };
    Ok(support)
}

/// `support.py` compiled by the build script for the interpreter it linked against.
const SUPPORT_MARSHAL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/support.marshal"));

/// `_lfeval_support`, from the build's compiled code when this interpreter can run it (same
/// cache tag), else compiled from source here.
fn support_module(py: Python<'_>) -> Result<Bound<'_, PyModule>, PythonError> {
    if let Some(module) = precompiled_support(py) {
        return Ok(module);
    }
    let code = CString::new(SUPPORT_PY).map_err(|e| PythonError::Init {
        message: format!("support module: {e}"),
    })?;
    PyModule::from_code(py, &code, c"<lfeval-support>", c"_lfeval_support").map_err(init_err)
}

fn precompiled_support(py: Python<'_>) -> Option<Bound<'_, PyModule>> {
    let newline = SUPPORT_MARSHAL.iter().position(|b| *b == b'\n')?;
    let (tag, code) = (&SUPPORT_MARSHAL[..newline], &SUPPORT_MARSHAL[newline + 1..]);
    let running: String = py
        .import("sys")
        .and_then(|sys| sys.getattr("implementation")?.getattr("cache_tag")?.extract())
        .ok()?;
    if running.as_bytes() != tag {
        return None;
    }
    let code = py
        .import("marshal")
        .and_then(|m| m.call_method1("loads", (pyo3::types::PyBytes::new(py, code),)))
        .ok()?;
    // SAFETY: attached; `code` is a live code object; the names are NUL-terminated. The call
    // returns a new reference to the module (registered in `sys.modules`) or NULL with an
    // exception set, which `from_owned_ptr_or_err` takes over.
    let module = unsafe {
        let ptr =
            ffi::PyImport_ExecCodeModuleEx(c"_lfeval_support".as_ptr(), code.as_ptr(), c"<lfeval-support>".as_ptr());
        Bound::from_owned_ptr_or_err(py, ptr)
    };
    module.ok()?.cast_into::<PyModule>().ok()
}

pub(super) fn venv_site_packages(venv: &Path, major: u8, minor: u8) -> Result<String, PythonError> {
    let want = format!("python{major}.{minor}");
    let site = venv.join("lib").join(&want).join("site-packages");
    if site.is_dir() {
        return Ok(site.display().to_string());
    }
    let found: Vec<String> = std::fs::read_dir(venv.join("lib"))
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("python"))
                .collect()
        })
        .unwrap_or_default();
    let exe = option_env!("LFEVAL_PY_EXE").unwrap_or("python3");
    let reason = match found.first() {
        Some(other) => format!(
            "it was created for `{other}` but lfeval embeds `{want}`; hint: recreate it with `{exe} -m venv {}`",
            venv.display()
        ),
        None => format!(
            "no `lib/{want}/site-packages` inside; hint: create it with `{exe} -m venv {}`",
            venv.display()
        ),
    };
    Err(PythonError::Venv {
        path: venv.to_path_buf(),
        reason,
    })
}
