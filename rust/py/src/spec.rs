//! Reads the space description that `pufferrs.spaces.describe` makes of a
//! gymnasium space: nested dicts with named fields (`kind`, `dtype`,
//! `shape`, ...). Nothing is refused here: whatever has no flat row becomes
//! `Space::Unsupported`, which `Layout::new` refuses with its path. Nothing
//! nested deeper than `MAX_DEPTH` is read, so no description, however
//! deep, can exhaust the stack.

use pufferrs_core::dtype::{DType, Value};
use pufferrs_core::layout::{MAX_DEPTH, Space};
use pufferrs_core::text::DEFAULT_STRING_LENGTH;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt, PyString};

use crate::errors::type_name;

pub fn parse(spec: &Bound<'_, PyAny>) -> Space {
    parse_at(spec, 0)
}

/// Parses the description of a space nested `depth` deep.
fn parse_at(spec: &Bound<'_, PyAny>, depth: usize) -> Space {
    if depth > MAX_DEPTH {
        return Space::too_deep();
    }
    read(spec, depth).unwrap_or_else(|err| Space::Unsupported(format!("malformed space description: {err}")))
}

fn read(spec: &Bound<'_, PyAny>, depth: usize) -> PyResult<Space> {
    let field = |name: &str| spec.get_item(name);
    let kind: String = field("kind")?.extract()?;
    let dtype = || -> PyResult<Result<DType, Space>> {
        let name: Option<String> = field("dtype")?.extract()?;
        let name = name.unwrap_or_else(|| "None".into());
        Ok(DType::from_name(&name).ok_or_else(|| Space::unsupported_dtype(&kind, &name)))
    };
    Ok(match kind.as_str() {
        "Box" | "Discrete" | "MultiDiscrete" | "MultiBinary" => {
            let dtype = match dtype()? {
                Ok(dtype) => dtype,
                Err(unsupported) => return Ok(unsupported),
            };
            match kind.as_str() {
                "Box" => Space::Box {
                    dtype,
                    shape: field("shape")?.extract()?,
                    low: values(&field("low")?)?,
                    high: values(&field("high")?)?,
                },
                "Discrete" => Space::Discrete { dtype, n: field("n")?.extract()?, start: field("start")?.extract()? },
                "MultiDiscrete" => Space::MultiDiscrete {
                    dtype,
                    shape: field("shape")?.extract()?,
                    nvec: field("nvec")?.extract()?,
                    start: field("start")?.extract()?,
                },
                _ => Space::MultiBinary { dtype, shape: field("shape")?.extract()? },
            }
        }
        "Dict" => {
            let mut items = Vec::new();
            for item in field("items")?.try_iter()? {
                // A pair: a tuple from `describe`, a list from JSON.
                let item = item?;
                let (key, sub) = (item.get_item(0)?, item.get_item(1)?);
                let Ok(key) = key.cast::<PyString>() else {
                    let repr = key.repr().map(|r| r.to_string()).unwrap_or_else(|_| type_name(&key));
                    return Ok(Space::Unsupported(format!("Dict keys must be str, got {repr}")));
                };
                items.push((key.to_str()?.to_owned(), parse_at(&sub, depth + 1)));
            }
            Space::Dict(items)
        }
        "Text" => Space::Text {
            charset: field("charset")?.extract::<String>()?.chars().collect(),
            min_length: field("min_length")?.extract()?,
            max_length: field("max_length")?.extract()?,
        },
        // A string-valued space that lists no charset: the core's rule.
        "String" => Space::string(field("max_length")?.extract::<Option<usize>>()?.unwrap_or(DEFAULT_STRING_LENGTH)),
        "Tuple" => {
            Space::Tuple(field("items")?.try_iter()?.map(|s| Ok(parse_at(&s?, depth + 1))).collect::<PyResult<_>>()?)
        }
        other => Space::unsupported_kind(other),
    })
}

/// Bounds as Python numbers: ints stay exact, floats (inf included) are f64.
fn values(list: &Bound<'_, PyAny>) -> PyResult<Vec<Value>> {
    list.try_iter()?
        .map(|v| {
            let v = v?;
            if v.is_instance_of::<PyBool>() || v.is_instance_of::<PyInt>() {
                Ok(Value::Int(v.extract()?))
            } else {
                Ok(Value::Float(v.extract()?))
            }
        })
        .collect()
}

/// The description of `space` that `parse` reads back (and that
/// `pufferrs.native` turns into a gymnasium space): how a space declared
/// in Rust reaches Python.
pub fn describe<'py>(py: Python<'py>, space: &Space) -> PyResult<Bound<'py, PyAny>> {
    use pyo3::types::PyDict;
    let spec = PyDict::new(py);
    let numbers = |values: &[Value]| -> PyResult<Vec<Bound<'py, PyAny>>> {
        values
            .iter()
            .map(|value| match value {
                Value::Int(v) => Ok(v.into_pyobject(py)?.into_any()),
                Value::Float(v) => Ok(v.into_pyobject(py)?.into_any()),
            })
            .collect()
    };
    match space {
        Space::Box { dtype, shape, low, high } => {
            spec.set_item("kind", "Box")?;
            spec.set_item("dtype", dtype.name())?;
            spec.set_item("shape", pyo3::types::PyTuple::new(py, shape)?)?;
            spec.set_item("low", numbers(low)?)?;
            spec.set_item("high", numbers(high)?)?;
        }
        Space::Discrete { dtype, n, start } => {
            spec.set_item("kind", "Discrete")?;
            spec.set_item("dtype", dtype.name())?;
            spec.set_item("n", n)?;
            spec.set_item("start", start)?;
        }
        Space::MultiDiscrete { dtype, shape, nvec, start } => {
            spec.set_item("kind", "MultiDiscrete")?;
            spec.set_item("dtype", dtype.name())?;
            spec.set_item("shape", pyo3::types::PyTuple::new(py, shape)?)?;
            spec.set_item("nvec", nvec)?;
            spec.set_item("start", start)?;
        }
        Space::MultiBinary { dtype, shape } => {
            spec.set_item("kind", "MultiBinary")?;
            spec.set_item("dtype", dtype.name())?;
            spec.set_item("shape", pyo3::types::PyTuple::new(py, shape)?)?;
        }
        Space::Text { charset, min_length, max_length } => {
            spec.set_item("kind", "Text")?;
            spec.set_item("charset", charset.iter().collect::<String>())?;
            spec.set_item("min_length", min_length)?;
            spec.set_item("max_length", max_length)?;
        }
        Space::Dict(items) => {
            spec.set_item("kind", "Dict")?;
            let items =
                items.iter().map(|(key, sub)| Ok((key.as_str(), describe(py, sub)?))).collect::<PyResult<Vec<_>>>()?;
            spec.set_item("items", items)?;
        }
        Space::Tuple(items) => {
            spec.set_item("kind", "Tuple")?;
            spec.set_item("items", items.iter().map(|sub| describe(py, sub)).collect::<PyResult<Vec<_>>>()?)?;
        }
        Space::Unsupported(reason) => {
            spec.set_item("kind", "Unsupported")?;
            spec.set_item("reason", reason)?;
        }
    }
    Ok(spec.into_any())
}
