//! Python values <-> JSON values.
//!
//! Saving walks the values itself rather than through pythonize, because pythonize accepts any
//! sequence or mapping (a `set` would come back as a list) and we must refuse, at save time and
//! naming the key, whatever JSON cannot hold faithfully: str keys; str, int, float (finite),
//! bool, None, list, tuple (read back as a list) and dict values. Loading uses pythonize.

use crate::errors::{argument_type_error, type_name, value_error, wrong_type};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use pythonize::pythonize;
use serde_json::{Map, Number, Value};

/// How deep values may nest; deeper is refused with a clear error instead of risking the stack.
/// serde_json reads back at most 128 levels, and the record envelope takes two of them.
pub const MAX_DEPTH: usize = 120;

/// The items of `dict` (read from the dict's own storage) as a JSON map.
pub fn dict_to_json(dict: &Bound<'_, PyDict>) -> PyResult<Map<String, Value>> {
    let mut map = Map::with_capacity(dict.len());
    for (key, value) in dict.iter() {
        let key = string_key(&key)?;
        let json = to_json(&value, 1).map_err(|problem| problem.into_error(&key))?;
        map.insert(key, json);
    }
    Ok(map)
}

/// Puts the items of `map` into `dict` as fresh Python objects.
pub fn json_into_dict(map: &Map<String, Value>, dict: &Bound<'_, PyDict>) -> PyResult<()> {
    let py = dict.py();
    for (key, value) in map {
        let value = pythonize(py, value)?;
        dict.set_item(key, value)?;
    }
    Ok(())
}

/// Why a value cannot be stored.
enum Unstorable {
    Type(String),
    NonStringKey(String),
    NotFinite,
    TooDeep,
    Python(PyErr),
}

impl Unstorable {
    fn into_error(self, key: &str) -> PyErr {
        const UNCHANGED: &str = "The stored session was not changed.";
        match self {
            Self::Type(type_name) => argument_type_error(format!(
                "session key {key:?} holds a value of type {type_name} that tornsession cannot \
                 store: sessions are stored as JSON (str, int, float, bool, None, list, tuple, \
                 dict with str keys); store its data (an id, a dict) instead. {UNCHANGED}"
            )),
            Self::NonStringKey(type_name) => argument_type_error(format!(
                "session key {key:?} holds a dict with a key of type {type_name}: JSON object keys \
                 are strings. {UNCHANGED}"
            )),
            Self::NotFinite => value_error(format!(
                "session key {key:?} holds NaN or infinity, which JSON cannot store. {UNCHANGED}"
            )),
            Self::TooDeep => value_error(format!(
                "session key {key:?} holds values nested deeper than {MAX_DEPTH} levels. {UNCHANGED}"
            )),
            Self::Python(error) => error,
        }
    }
}

impl From<PyErr> for Unstorable {
    fn from(error: PyErr) -> Self {
        Self::Python(error)
    }
}

fn string_key(key: &Bound<'_, PyAny>) -> PyResult<String> {
    match key.cast::<PyString>() {
        Ok(key) => Ok(key.to_str()?.to_owned()),
        Err(_) => Err(argument_type_error(format!(
            "session keys must be str, not {}: {} (JSON object keys are strings)",
            type_name(key),
            key.repr()?
        ))),
    }
}

fn to_json(value: &Bound<'_, PyAny>, depth: usize) -> Result<Value, Unstorable> {
    if depth > MAX_DEPTH {
        return Err(Unstorable::TooDeep);
    }
    // Exact-type checks first: they are the common case and the cheapest.
    if let Ok(text) = value.cast::<PyString>() {
        return Ok(Value::String(text.to_str()?.to_owned()));
    }
    if value.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(flag) = value.cast::<PyBool>() {
        return Ok(Value::Bool(flag.is_true()));
    }
    if value.is_instance_of::<PyInt>() {
        if let Ok(n) = value.extract::<i64>() {
            return Ok(Value::Number(n.into()));
        }
        if let Ok(n) = value.extract::<u64>() {
            return Ok(Value::Number(n.into()));
        }
        return Err(Unstorable::Type("int beyond 64 bits".to_owned()));
    }
    if let Ok(float) = value.cast::<PyFloat>() {
        return Number::from_f64(float.value())
            .map(Value::Number)
            .ok_or(Unstorable::NotFinite);
    }
    if let Ok(dict) = value.cast::<PyDict>() {
        let mut map = Map::with_capacity(dict.len());
        for (key, item) in dict.iter() {
            let Ok(key) = key.cast::<PyString>() else {
                return Err(Unstorable::NonStringKey(type_name(&key)));
            };
            map.insert(key.to_str()?.to_owned(), to_json(&item, depth + 1)?);
        }
        return Ok(Value::Object(map));
    }
    if let Ok(list) = value.cast::<PyList>() {
        return list.iter().map(|item| to_json(&item, depth + 1)).collect();
    }
    if let Ok(tuple) = value.cast::<PyTuple>() {
        return tuple.iter().map(|item| to_json(&item, depth + 1)).collect();
    }
    Err(Unstorable::Type(type_name(value)))
}

/// A user id argument: a str (anything else is a TypeError, whatever the store).
pub fn user_id_arg(user_id: &Bound<'_, PyAny>) -> PyResult<String> {
    match user_id.cast::<PyString>() {
        Ok(text) => Ok(text.to_str()?.to_owned()),
        Err(_) => Err(wrong_type("user_id must be a str", user_id)),
    }
}
