//! `MutList`: a Python-style list that templates can mutate in place (`append`, `extend`,
//! `insert`, `pop`, `remove`, `clear`, `copy`, `index`, `count`, `reverse`, `sort`).

use std::fmt::{self};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, Value, from_args};
use minijinja::{Error, ErrorKind, State};

use super::mutation::{insertable, invalid, iterate, python_index};

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // a panic while holding the lock cannot leave a Vec/map half-updated in a way that matters
    // for rendering, so a poisoned lock is still usable
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A Python-style list that supports in-place mutation.
#[derive(Default)]
pub(super) struct MutList {
    items: Mutex<Vec<Value>>,
}

impl fmt::Debug for MutList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.snapshot().iter()).finish()
    }
}

impl MutList {
    pub(super) fn new_value(items: Vec<Value>) -> Value {
        Value::from_object(MutList {
            items: Mutex::new(items),
        })
    }

    pub(super) fn snapshot(&self) -> Vec<Value> {
        lock(&self.items).clone()
    }
}

impl Object for MutList {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let idx = key.as_usize()?;
        lock(&self.items).get(idx).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.snapshot())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(lock(&self.items).len())
    }

    fn is_true(self: &Arc<Self>) -> bool {
        !lock(&self.items).is_empty()
    }

    fn call_method(self: &Arc<Self>, _state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        let me = Arc::as_ptr(self) as *const ();
        match method {
            "append" => {
                let (item,): (Value,) = from_args(args)?;
                let item = insertable(item, me)?;
                lock(&self.items).push(item);
                Ok(Value::from(()))
            }
            "extend" => {
                let (other,): (Value,) = from_args(args)?;
                let mut new = Vec::new();
                for item in iterate(&other, "extend")? {
                    new.push(insertable(item, me)?);
                }
                lock(&self.items).extend(new);
                Ok(Value::from(()))
            }
            "insert" => {
                let (idx, item): (i64, Value) = from_args(args)?;
                let item = insertable(item, me)?;
                let mut items = lock(&self.items);
                let idx = python_index(idx, items.len()).min(items.len());
                items.insert(idx, item);
                Ok(Value::from(()))
            }
            "pop" => {
                let (idx,): (Option<i64>,) = from_args(args)?;
                let mut items = lock(&self.items);
                if items.is_empty() {
                    return Err(invalid("pop from empty list"));
                }
                let len = items.len();
                let idx = match idx {
                    None => len - 1,
                    Some(i) if i < 0 && i.unsigned_abs() as usize <= len => len - i.unsigned_abs() as usize,
                    Some(i) if i >= 0 && (i as usize) < len => i as usize,
                    Some(_) => return Err(invalid("pop index out of range")),
                };
                Ok(items.remove(idx))
            }
            "remove" => {
                let (needle,): (Value,) = from_args(args)?;
                let snapshot = self.snapshot();
                let Some(pos) = snapshot.iter().position(|v| *v == needle) else {
                    return Err(invalid(format!("list.remove(x): `{needle:?}` is not in list")));
                };
                let mut items = lock(&self.items);
                if pos < items.len() {
                    items.remove(pos);
                }
                Ok(Value::from(()))
            }
            "index" => {
                let (needle,): (Value,) = from_args(args)?;
                self.snapshot()
                    .iter()
                    .position(|v| *v == needle)
                    .map(Value::from)
                    .ok_or_else(|| invalid(format!("`{needle:?}` is not in list")))
            }
            "count" => {
                let (needle,): (Value,) = from_args(args)?;
                Ok(Value::from(self.snapshot().iter().filter(|v| **v == needle).count()))
            }
            "clear" => {
                let () = from_args(args)?;
                lock(&self.items).clear();
                Ok(Value::from(()))
            }
            "copy" => {
                let () = from_args(args)?;
                Ok(MutList::new_value(self.snapshot()))
            }
            "reverse" => {
                let () = from_args(args)?;
                lock(&self.items).reverse();
                Ok(Value::from(()))
            }
            "sort" => {
                let (kwargs,): (Kwargs,) = from_args(args)?;
                let reverse: Option<bool> = kwargs.get("reverse")?;
                kwargs.assert_all_used()?;
                let mut items = self.snapshot();
                items.sort();
                if reverse == Some(true) {
                    items.reverse();
                }
                *lock(&self.items) = items;
                Ok(Value::from(()))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}
