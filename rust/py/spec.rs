//! Reads the space description that `pufferrs.spaces.describe` builds from a
//! gymnasium space: nested tuples of plain Python values.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt};

use crate::core::dtype::{DType, Value};
use crate::core::layout::Space;

pub fn parse(spec: &Bound<'_, PyAny>) -> PyResult<Space> {
    let kind: String = spec.get_item(0)?.extract()?;
    let field = |i: usize| spec.get_item(i);
    let dtype = || -> PyResult<DType> {
        let name: String = field(1)?.extract()?;
        DType::from_name(&name).ok_or_else(|| PyValueError::new_err(format!("unknown dtype {name:?}")))
    };
    Ok(match kind.as_str() {
        "box" => Space::Box {
            dtype: dtype()?,
            shape: field(2)?.extract()?,
            low: values(&field(3)?)?,
            high: values(&field(4)?)?,
        },
        "discrete" => Space::Discrete { dtype: dtype()?, n: field(2)?.extract()?, start: field(3)?.extract()? },
        "multidiscrete" => Space::MultiDiscrete {
            dtype: dtype()?,
            shape: field(2)?.extract()?,
            nvec: field(3)?.extract()?,
            start: field(4)?.extract()?,
        },
        "multibinary" => Space::MultiBinary { dtype: dtype()?, shape: field(2)?.extract()? },
        "dict" => {
            let mut items = Vec::new();
            for item in field(1)?.try_iter()? {
                let item = item?;
                items.push((item.get_item(0)?.extract()?, parse(&item.get_item(1)?)?));
            }
            Space::Dict(items)
        }
        "tuple" => Space::Tuple(field(1)?.try_iter()?.map(|s| parse(&s?)).collect::<PyResult<_>>()?),
        other => return Err(PyValueError::new_err(format!("unknown space kind {other:?}"))),
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
