//! Host objects: Rust async functions a snippet can `await`, such as the `model` a Python solver
//! gets (`await model.predict(trace.items)` runs lfeval's whole model chain). The snippet
//! argument is a marker value ([`host_object`]); when it is converted for Python it becomes a
//! `_lfeval_support.HostModel` whose calls run the Rust function on the tokio runtime that
//! registered it and resolve an asyncio future when it finishes.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use pyo3::prelude::*;
use pyo3::types::{PyCFunction, PyTuple};
use serde_json::Value;

use super::convert;

pub type HostFuture = Pin<Box<dyn Future<Output = Result<Value, String>> + Send>>;
/// A host function: takes the snippet's argument as JSON, answers JSON or an error message.
pub type HostFn = Arc<dyn Fn(Value) -> HostFuture + Send + Sync>;

/// The marker key of a host object in a snippet argument.
pub(super) const HOST_OBJECT: &str = "__lfeval_host_object__";

static HOSTS: LazyLock<Mutex<HashMap<u64, (HostFn, tokio::runtime::Handle)>>> = LazyLock::new(Default::default);
static NEXT: AtomicU64 = AtomicU64::new(1);

/// Keeps a host object registered; dropping it makes later calls fail.
pub struct HostGuard(u64);

impl Drop for HostGuard {
    fn drop(&mut self) {
        HOSTS.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.0);
    }
}

/// A snippet argument that Python receives as an object with `async predict(items, sample=None)`
/// calling `f`. Must be called inside a tokio runtime (where `f` will run).
pub fn host_object(f: HostFn) -> (Value, HostGuard) {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let handle = tokio::runtime::Handle::current();
    HOSTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id, (f, handle));
    (serde_json::json!({ HOST_OBJECT: id }), HostGuard(id))
}

/// The Python object for a host marker.
pub(super) fn to_py<'py>(py: Python<'py>, id: u64) -> PyResult<Bound<'py, PyAny>> {
    let call = PyCFunction::new_closure(
        py,
        Some(c"lfeval_host_call"),
        None,
        move |args: &Bound<'_, PyTuple>, _kwargs| -> PyResult<()> {
            let request = convert::from_py(&args.get_item(0)?).map_err(|u| {
                pyo3::exceptions::PyTypeError::new_err(format!("cannot pass a `{}` to lfeval", u.type_name))
            })?;
            let done: Py<PyAny> = args.get_item(1)?.unbind();
            let host = HOSTS.lock().unwrap_or_else(PoisonError::into_inner).get(&id).cloned();
            let Some((f, handle)) = host else {
                return Err(pyo3::exceptions::PyRuntimeError::new_err(
                    "this model can no longer be called (its solver call has ended)",
                ));
            };
            handle.spawn(async move {
                let result = f(request).await;
                // Back into Python off the async workers: only to hand the result to asyncio.
                let _ = tokio::task::spawn_blocking(move || {
                    Python::attach(|py| {
                        let (ok, value) = match &result {
                            Ok(v) => (true, convert::to_py(py, v)),
                            Err(message) => (false, Ok(pyo3::types::PyString::new(py, message).into_any())),
                        };
                        if let Ok(value) = value {
                            let _ = done.bind(py).call1((ok, value));
                        }
                    });
                })
                .await;
            });
            Ok(())
        },
    )?;
    py.import("_lfeval_support")?.getattr("HostModel")?.call1((call,))
}
