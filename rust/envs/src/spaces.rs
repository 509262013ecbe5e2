//! Spaces declared in Rust: short constructors of the core's [`Space`],
//! with gymnasium's default dtypes (int64 for `Discrete` and
//! `MultiDiscrete`, int8 for `MultiBinary`). Python sees them as the
//! gymnasium spaces they describe.

use pufferrs_core::dtype::{DType, Kind, Value};
use pufferrs_core::layout::Space;

use crate::slots::Element;

fn bound(dtype: DType, value: f64) -> Value {
    match dtype.kind() {
        Kind::Float => Value::Float(value),
        _ => Value::Int(value as i128),
    }
}

/// `Box(low, high, shape, T)`, the same bounds for every element.
pub fn boxed<T: Element>(low: f64, high: f64, shape: &[usize]) -> Space {
    let n = shape.iter().product();
    boxed_each::<T>(&vec![low; n], &vec![high; n], shape)
}

/// `Box(low, high, shape, T)` with bounds per element (C order).
pub fn boxed_each<T: Element>(low: &[f64], high: &[f64], shape: &[usize]) -> Space {
    let dtype = T::DTYPE;
    Space::Box {
        dtype,
        shape: shape.to_vec(),
        low: low.iter().map(|&v| bound(dtype, v)).collect(),
        high: high.iter().map(|&v| bound(dtype, v)).collect(),
    }
}

/// `Discrete(n)` (int64, start 0).
pub fn discrete(n: i64) -> Space {
    Space::Discrete { dtype: DType::I64, n: n.into(), start: 0 }
}

/// `MultiDiscrete(nvec)` of `shape` (int64, start 0): `nvec` holds one
/// count per element, in C order.
pub fn multi_discrete(nvec: &[i64], shape: &[usize]) -> Space {
    Space::MultiDiscrete {
        dtype: DType::I64,
        shape: shape.to_vec(),
        nvec: nvec.iter().map(|&n| n.into()).collect(),
        start: vec![0; nvec.len()],
    }
}

/// `MultiBinary(n)` (int8), e.g. an `action_mask` leaf.
pub fn multi_binary(n: usize) -> Space {
    Space::MultiBinary { dtype: DType::I8, shape: vec![n] }
}

/// `Text(max_length, min_length=min_length, charset=charset)`.
pub fn text(charset: &str, min_length: usize, max_length: usize) -> Space {
    Space::Text { charset: charset.chars().collect(), min_length, max_length }
}

/// `Dict` with its keys in the order given (gymnasium keeps that order).
pub fn dict(items: Vec<(&str, Space)>) -> Space {
    Space::Dict(items.into_iter().map(|(key, space)| (key.to_owned(), space)).collect())
}

/// `Tuple` of `items`.
pub fn tuple(items: Vec<Space>) -> Space {
    Space::Tuple(items)
}
