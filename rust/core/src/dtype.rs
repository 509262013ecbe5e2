//! The numeric element types a leaf can hold, and how values move between them.

use half::f16;

/// A numpy numeric dtype, named as numpy names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    Bool,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F16,
    F32,
    F64,
}

/// numpy's kinds, in the order its `same_kind` rule uses: a cast is allowed
/// when it does not move to an earlier kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Bool,
    Unsigned,
    Signed,
    Float,
}

/// One element's value, wide enough for every dtype without loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Int(i128),
    Float(f64),
}

impl Value {
    /// Whether `lo <= self <= hi`, comparing integers exactly and anything
    /// involving a float as f64. False for NaN.
    pub fn within(self, lo: Value, hi: Value) -> bool {
        fn le(a: Value, b: Value) -> bool {
            match (a, b) {
                (Value::Int(a), Value::Int(b)) => a <= b,
                (a, b) => a.as_f64() <= b.as_f64(),
            }
        }
        le(lo, self) && le(self, hi)
    }

    pub fn as_f64(self) -> f64 {
        match self {
            Value::Int(v) => v as f64,
            Value::Float(v) => v,
        }
    }

    pub fn is_finite(self) -> bool {
        self.as_f64().is_finite()
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v}"),
        }
    }
}

pub const ALL: [DType; 12] = [
    DType::Bool,
    DType::I8,
    DType::I16,
    DType::I32,
    DType::I64,
    DType::U8,
    DType::U16,
    DType::U32,
    DType::U64,
    DType::F16,
    DType::F32,
    DType::F64,
];

impl DType {
    pub fn from_name(name: &str) -> Option<DType> {
        ALL.into_iter().find(|d| d.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::Bool => "bool",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::U8 => "uint8",
            DType::U16 => "uint16",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
            DType::F16 => "float16",
            DType::F32 => "float32",
            DType::F64 => "float64",
        }
    }

    #[inline]
    pub fn itemsize(self) -> usize {
        match self {
            DType::Bool | DType::I8 | DType::U8 => 1,
            DType::I16 | DType::U16 | DType::F16 => 2,
            DType::I32 | DType::U32 | DType::F32 => 4,
            DType::I64 | DType::U64 | DType::F64 => 8,
        }
    }

    #[inline]
    pub fn kind(self) -> Kind {
        match self {
            DType::Bool => Kind::Bool,
            DType::U8 | DType::U16 | DType::U32 | DType::U64 => Kind::Unsigned,
            DType::I8 | DType::I16 | DType::I32 | DType::I64 => Kind::Signed,
            DType::F16 | DType::F32 | DType::F64 => Kind::Float,
        }
    }

    /// numpy's `can_cast(src, self, casting="same_kind")`. A `weak` source
    /// is a Python number or list (NEP 50): a Python int may go into any
    /// integer dtype, its value checked by `cast`.
    pub fn accepts(self, src: DType, weak: bool) -> bool {
        let kind = match src.kind() {
            Kind::Signed if weak => Kind::Unsigned,
            kind => kind,
        };
        kind <= self.kind()
    }

    /// `value` as this dtype stores it, or None if it cannot be stored
    /// without wrapping or truncation. Floats round to this precision (as
    /// numpy's float64 -> float32 does); integers must be in range.
    #[inline]
    pub fn cast(self, value: Value) -> Option<Value> {
        match (self.int_range(), value) {
            (Some((lo, hi)), Value::Int(v)) => (lo <= v && v <= hi).then_some(value),
            (Some(_), Value::Float(_)) => None,
            (None, v) => {
                let mut buf = [0u8; 8];
                self.write(v, &mut buf);
                Some(self.read(&buf))
            }
        }
    }

    /// Whether `cast` takes every value of `src`: floats take anything
    /// (rounded), integers and bools what their range holds.
    pub fn casts_every(self, src: DType) -> bool {
        match (self.int_range(), src.int_range()) {
            (None, _) => true,
            (Some((lo, hi)), Some((src_lo, src_hi))) => lo <= src_lo && src_hi <= hi,
            (Some(_), None) => false,
        }
    }

    /// The inclusive range of integer values this dtype holds; None for floats.
    #[inline]
    pub fn int_range(self) -> Option<(i128, i128)> {
        let bits = 8 * self.itemsize() as u32;
        match self.kind() {
            Kind::Bool => Some((0, 1)),
            Kind::Unsigned => Some((0, (1i128 << bits) - 1)),
            Kind::Signed => Some((-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)),
            Kind::Float => None,
        }
    }

    /// Reads one element from the start of `bytes` (native byte order).
    #[inline]
    pub fn read(self, bytes: &[u8]) -> Value {
        fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
            b[..N].try_into().expect("caller passes at least itemsize bytes")
        }
        match self {
            DType::Bool => Value::Int((bytes[0] != 0) as i128),
            DType::I8 => Value::Int(bytes[0] as i8 as i128),
            DType::U8 => Value::Int(bytes[0] as i128),
            DType::I16 => Value::Int(i16::from_ne_bytes(arr(bytes)) as i128),
            DType::U16 => Value::Int(u16::from_ne_bytes(arr(bytes)) as i128),
            DType::I32 => Value::Int(i32::from_ne_bytes(arr(bytes)) as i128),
            DType::U32 => Value::Int(u32::from_ne_bytes(arr(bytes)) as i128),
            DType::I64 => Value::Int(i64::from_ne_bytes(arr(bytes)) as i128),
            DType::U64 => Value::Int(u64::from_ne_bytes(arr(bytes)) as i128),
            DType::F16 => Value::Float(f16::from_ne_bytes(arr(bytes)).to_f64()),
            DType::F32 => Value::Float(f32::from_ne_bytes(arr(bytes)) as f64),
            DType::F64 => Value::Float(f64::from_ne_bytes(arr(bytes))),
        }
    }

    /// Writes `value` as one element at the start of `out`. Exact for a value
    /// that `cast` accepted.
    #[inline]
    pub fn write(self, value: Value, out: &mut [u8]) {
        // Each arm converts only as far as it needs: an i128 to f64
        // conversion is a library call, too slow for the integer arms.
        let as_int = || match value {
            Value::Int(v) => v,
            Value::Float(v) => v as i128,
        };
        let as_f64 = || value.as_f64();
        let out = &mut out[..self.itemsize()];
        match self {
            DType::Bool => out[0] = (as_int() != 0) as u8,
            DType::I8 => out.copy_from_slice(&(as_int() as i8).to_ne_bytes()),
            DType::U8 => out.copy_from_slice(&(as_int() as u8).to_ne_bytes()),
            DType::I16 => out.copy_from_slice(&(as_int() as i16).to_ne_bytes()),
            DType::U16 => out.copy_from_slice(&(as_int() as u16).to_ne_bytes()),
            DType::I32 => out.copy_from_slice(&(as_int() as i32).to_ne_bytes()),
            DType::U32 => out.copy_from_slice(&(as_int() as u32).to_ne_bytes()),
            DType::I64 => out.copy_from_slice(&(as_int() as i64).to_ne_bytes()),
            DType::U64 => out.copy_from_slice(&(as_int() as u64).to_ne_bytes()),
            DType::F16 => out.copy_from_slice(&f16::from_f64(as_f64()).to_ne_bytes()),
            DType::F32 => out.copy_from_slice(&(as_f64() as f32).to_ne_bytes()),
            DType::F64 => out.copy_from_slice(&as_f64().to_ne_bytes()),
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in ALL {
            assert_eq!(DType::from_name(d.name()), Some(d));
        }
        assert_eq!(DType::from_name("complex64"), None);
    }

    #[test]
    fn same_kind_matches_numpy() {
        // Rows of numpy's `can_cast(src, dst, "same_kind")` over ALL x ALL.
        let numpy = [
            "xxxxxxxxxxxx",
            ".xxxx....xxx",
            ".xxxx....xxx",
            ".xxxx....xxx",
            ".xxxx....xxx",
            ".xxxxxxxxxxx",
            ".xxxxxxxxxxx",
            ".xxxxxxxxxxx",
            ".xxxxxxxxxxx",
            ".........xxx",
            ".........xxx",
            ".........xxx",
        ];
        for (src, row) in ALL.iter().zip(numpy) {
            for (dst, c) in ALL.iter().zip(row.chars()) {
                assert_eq!(dst.accepts(*src, false), c == 'x', "{src} -> {dst}");
            }
        }
    }

    #[test]
    fn values_round_trip_through_bytes() {
        let mut buf = [0u8; 8];
        for d in ALL {
            let (lo, hi) = d.int_range().unwrap_or((-1000, 1000));
            for v in [lo, hi, 0, 1] {
                let value = if d.kind() == Kind::Float { Value::Float(v as f64) } else { Value::Int(v) };
                assert_eq!(d.cast(value), Some(value));
                d.write(value, &mut buf);
                assert_eq!(d.read(&buf), value, "{d} {v}");
            }
        }
    }

    #[test]
    fn casts_refuse_what_would_wrap() {
        assert_eq!(DType::U8.cast(Value::Int(256)), None);
        assert_eq!(DType::U8.cast(Value::Int(-1)), None);
        assert_eq!(DType::I8.cast(Value::Int(-129)), None);
        assert_eq!(DType::I8.cast(Value::Int(-128)), Some(Value::Int(-128)));
        assert_eq!(DType::I64.cast(Value::Float(1.0)), None);
        assert_eq!(DType::F32.cast(Value::Float(0.1)), Some(Value::Float(0.1f32 as f64)));
        assert_eq!(DType::F16.cast(Value::Int(1 << 40)), Some(Value::Float(f64::INFINITY)));
    }

    #[test]
    fn casts_every_agrees_with_cast_on_the_extremes() {
        for dst in ALL {
            for src in ALL {
                let extremes = match src.int_range() {
                    Some((lo, hi)) => vec![Value::Int(lo), Value::Int(hi)],
                    None => vec![Value::Float(f64::MAX), Value::Float(-1.5)],
                };
                let all_fit = extremes.iter().all(|&v| dst.cast(v).is_some());
                assert_eq!(dst.casts_every(src), all_fit, "{src} -> {dst}");
            }
        }
    }

    #[test]
    fn python_ints_are_weak() {
        assert!(!DType::U8.accepts(DType::I64, false));
        assert!(DType::U8.accepts(DType::I64, true));
        assert!(!DType::Bool.accepts(DType::I64, true));
        assert!(!DType::I64.accepts(DType::F64, true));
    }

    #[test]
    fn within_compares_mixed_values() {
        assert!(Value::Int(3).within(Value::Float(-0.5), Value::Float(3.0)));
        assert!(!Value::Float(f64::NAN).within(Value::Float(f64::NEG_INFINITY), Value::Float(f64::INFINITY)));
        assert!(Value::Int(i64::MAX as i128).within(Value::Int(0), Value::Int(i64::MAX as i128)));
    }
}
