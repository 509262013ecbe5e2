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
                let (key, sub): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
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
