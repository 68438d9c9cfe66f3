//! `MutMap`: a Python-style dict that templates can mutate in place (`update`, `pop`,
//! `setdefault`, `get`, `clear`, `copy`, `popitem`), over an insertion-ordered `OrderedMap`.

use std::collections::HashMap;
use std::fmt::{self};
use std::sync::{Arc, Mutex};

use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, Tuple, Value, from_args};
use minijinja::{Error, ErrorKind, State};

use super::mut_list::lock;
use super::mutation::{hashable, insertable, invalid, pairs_of};

/// Maps with more entries than this get a hash index; smaller ones are scanned.
pub(super) const SMALL_MAP: usize = 12;

/// Insertion-ordered map keyed by minijinja values (Python dict semantics).
#[derive(Default, Clone)]
pub(super) struct OrderedMap {
    entries: Vec<(Value, Value)>,
    index: HashMap<Value, usize>,
}

impl OrderedMap {
    fn position(&self, key: &Value) -> Option<usize> {
        if self.entries.len() > SMALL_MAP {
            self.index.get(key).copied()
        } else {
            self.entries.iter().position(|(k, _)| k == key)
        }
    }

    pub(super) fn get(&self, key: &Value) -> Option<&Value> {
        self.position(key).map(|p| &self.entries[p].1)
    }

    pub(super) fn insert(&mut self, key: Value, value: Value) {
        if let Some(p) = self.position(&key) {
            self.entries[p].1 = value;
            return;
        }
        self.entries.push((key.clone(), value));
        if self.entries.len() > SMALL_MAP {
            if self.index.is_empty() {
                self.reindex();
            } else {
                self.index.insert(key, self.entries.len() - 1);
            }
        }
    }

    pub(super) fn remove(&mut self, key: &Value) -> Option<Value> {
        let p = self.position(key)?;
        let (_, value) = self.entries.remove(p);
        self.reindex();
        Some(value)
    }

    fn reindex(&mut self) {
        self.index.clear();
        if self.entries.len() > SMALL_MAP {
            for (i, (k, _)) in self.entries.iter().enumerate() {
                self.index.insert(k.clone(), i);
            }
        }
    }
}

/// A Python-style dict that supports in-place mutation and keeps insertion order.
#[derive(Default)]
pub(super) struct MutMap {
    map: Mutex<OrderedMap>,
}

impl fmt::Debug for MutMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = lock(&self.map).clone();
        f.debug_map().entries(map.entries.iter().map(|(k, v)| (k, v))).finish()
    }
}

impl MutMap {
    pub(super) fn new_value(map: OrderedMap) -> Value {
        Value::from_object(MutMap { map: Mutex::new(map) })
    }

    pub(super) fn snapshot(&self) -> Vec<(Value, Value)> {
        lock(&self.map).entries.clone()
    }
}

impl Object for MutMap {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        lock(&self.map).get(key).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::KeyValueIter(Box::new(self.snapshot().into_iter()))
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(lock(&self.map).entries.len())
    }

    fn is_true(self: &Arc<Self>) -> bool {
        !lock(&self.map).entries.is_empty()
    }

    fn call_method(self: &Arc<Self>, _state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        let me = Arc::as_ptr(self) as *const ();
        match method {
            "update" => {
                let (other, kwargs): (Option<&Value>, Kwargs) = from_args(args)?;
                let mut pairs = match other {
                    Some(other) => pairs_of(other, "update")?,
                    None => Vec::new(),
                };
                for key in kwargs.args() {
                    pairs.push((Value::from(key), kwargs.get::<Value>(key)?));
                }
                let mut checked = Vec::with_capacity(pairs.len());
                for (k, v) in pairs {
                    checked.push((hashable(k)?, insertable(v, me)?));
                }
                let mut map = lock(&self.map);
                for (k, v) in checked {
                    map.insert(k, v);
                }
                Ok(Value::from(()))
            }
            "get" => {
                let (key, default): (&Value, Option<Value>) = from_args(args)?;
                Ok(lock(&self.map)
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| default.unwrap_or(Value::from(()))))
            }
            "pop" => {
                let (key, default): (&Value, Option<&Value>) = from_args(args)?;
                // `args.len()` distinguishes `pop(k, none)` from `pop(k)`
                match lock(&self.map).remove(key) {
                    Some(v) => Ok(v),
                    None if args.len() > 1 => Ok(default.cloned().unwrap_or(Value::from(()))),
                    None => Err(invalid(format!("key `{key:?}` not found"))),
                }
            }
            "setdefault" => {
                let (key, default): (Value, Option<Value>) = from_args(args)?;
                let key = hashable(key)?;
                if let Some(v) = lock(&self.map).get(&key) {
                    return Ok(v.clone());
                }
                let v = insertable(default.unwrap_or(Value::from(())), me)?;
                lock(&self.map).insert(key, v.clone());
                Ok(v)
            }
            "popitem" => {
                let () = from_args(args)?;
                let mut map = lock(&self.map);
                let Some((k, v)) = map.entries.pop() else {
                    return Err(invalid("popitem(): dictionary is empty"));
                };
                map.reindex();
                Ok(Value::from(Tuple::from(vec![k, v])))
            }
            "clear" => {
                let () = from_args(args)?;
                *lock(&self.map) = OrderedMap::default();
                Ok(Value::from(()))
            }
            "copy" => {
                let () = from_args(args)?;
                Ok(MutMap::new_value(lock(&self.map).clone()))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}
