//! The model runtimes of a run, one per model key, shared by targets and judges so that every
//! use of a model passes the same gate.

use std::collections::HashMap;
use std::sync::Arc;

use crate::diagnostic::Diagnostic;
use crate::model::runtime::ModelRuntime;

pub struct Registry {
    runtimes: HashMap<String, Arc<ModelRuntime>>,
}

impl Registry {
    pub fn new(runtimes: HashMap<String, Arc<ModelRuntime>>) -> Registry {
        Registry { runtimes }
    }

    /// Every runtime, in no particular order.
    pub fn runtimes(&self) -> impl Iterator<Item = &Arc<ModelRuntime>> {
        self.runtimes.values()
    }

    pub fn get(&self, key: &str) -> Result<Arc<ModelRuntime>, Diagnostic> {
        self.runtimes
            .get(key)
            .cloned()
            .ok_or_else(|| Diagnostic::new(format!("model `{key}` is not part of this run")))
    }
}
