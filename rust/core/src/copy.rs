//! Copy kernels from strided source arrays into row bytes.

use crate::dtype::{DType, Value};

/// Whether `itemsize`-byte elements laid out by `shape` and byte `strides`
/// lie back to back in C order (trivially so when there are none).
pub fn is_c_contiguous(shape: &[usize], strides: &[isize], itemsize: usize) -> bool {
    if shape.contains(&0) {
        return true;
    }
    let mut expected = itemsize as isize;
    for (&dim, &stride) in shape.iter().zip(strides).rev() {
        if dim != 1 && stride != expected {
            return false;
        }
        expected *= dim as isize;
    }
    true
}

/// A strided n-d array of one dtype: a numpy array's data as the core sees it.
#[derive(Clone, Copy, Debug)]
pub struct Strided<'a> {
    data: *const u8,
    pub dtype: DType,
    pub shape: &'a [usize],
    /// Byte strides, one per axis; may be negative or zero.
    pub strides: &'a [isize],
}

impl<'a> Strided<'a> {
    /// # Safety
    /// For every index inside `shape`, the `dtype.itemsize()` bytes at
    /// `data + sum(index * strides)` must stay readable for `'a`.
    pub unsafe fn new(data: *const u8, dtype: DType, shape: &'a [usize], strides: &'a [isize]) -> Self {
        debug_assert_eq!(shape.len(), strides.len());
        Strided { data, dtype, shape, strides }
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same array without its first axis, at `index` along it.
    pub fn at(&self, index: usize) -> Strided<'a> {
        assert!(index < self.shape[0], "index {index} outside axis of {}", self.shape[0]);
        Strided {
            // SAFETY: `index` is inside the first axis, so the result's
            // elements are a subset of this array's, readable by `new`'s contract.
            data: unsafe { self.data.offset(index as isize * self.strides[0]) },
            dtype: self.dtype,
            shape: &self.shape[1..],
            strides: &self.strides[1..],
        }
    }

    fn is_c_contiguous(&self) -> bool {
        is_c_contiguous(self.shape, self.strides, self.dtype.itemsize())
    }

    /// Calls `f` with the byte offset of every element, in C order.
    fn for_each_offset(&self, mut f: impl FnMut(isize)) {
        if self.is_empty() {
            return;
        }
        let mut index = vec![0usize; self.shape.len()];
        let mut offset = 0isize;
        loop {
            f(offset);
            let mut axis = self.shape.len();
            loop {
                if axis == 0 {
                    return;
                }
                axis -= 1;
                index[axis] += 1;
                offset += self.strides[axis];
                if index[axis] < self.shape[axis] {
                    break;
                }
                offset -= self.strides[axis] * self.shape[axis] as isize;
                index[axis] = 0;
            }
        }
    }

    fn element(&self, offset: isize) -> &[u8] {
        // SAFETY: `offset` comes from `for_each_offset`, so it addresses an
        // element inside the array, readable for itemsize bytes by `new`'s
        // contract. u8 has no alignment requirement.
        unsafe { std::slice::from_raw_parts(self.data.offset(offset), self.dtype.itemsize()) }
    }

    /// Visits every value in C order with its flat index; stops at the first error.
    pub fn try_for_each_value<E>(&self, mut f: impl FnMut(usize, Value) -> Result<(), E>) -> Result<(), E> {
        let mut index = 0;
        let mut result = Ok(());
        self.for_each_offset(|offset| {
            if result.is_ok() {
                result = f(index, self.dtype.read(self.element(offset)));
                index += 1;
            }
        });
        result
    }

    /// Copies the elements, in C order and in the same dtype, into `out`,
    /// which must be exactly `len() * itemsize` bytes.
    pub fn copy_to(&self, out: &mut [u8]) {
        let itemsize = self.dtype.itemsize();
        assert_eq!(out.len(), self.len() * itemsize, "destination size");
        if out.is_empty() {
            return;
        }
        if self.is_c_contiguous() {
            // SAFETY: the source is `out.len()` contiguous readable bytes by
            // `new`'s contract. `ptr::copy` allows the source to overlap
            // `out`, as it does when a row is flattened into itself.
            unsafe { std::ptr::copy(self.data, out.as_mut_ptr(), out.len()) };
            return;
        }
        let mut chunks = out.chunks_exact_mut(itemsize);
        self.for_each_offset(|offset| {
            let chunk = chunks.next().expect("one chunk per element");
            chunk.copy_from_slice(self.element(offset));
        });
    }

    /// Converts the elements, in C order, into `dtype` in `out`. Values are
    /// written as `dtype.cast` gives them; the caller has checked that each
    /// one fits.
    pub fn convert_to(&self, dtype: DType, out: &mut [u8]) {
        let itemsize = dtype.itemsize();
        assert_eq!(out.len(), self.len() * itemsize, "destination size");
        let mut chunks = out.chunks_exact_mut(itemsize);
        self.for_each_offset(|offset| {
            let chunk = chunks.next().expect("one chunk per element");
            dtype.write(self.dtype.read(self.element(offset)), chunk);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of(values: &[i32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_ne_bytes()).collect()
    }

    fn ints(bytes: &[u8]) -> Vec<i32> {
        bytes.chunks_exact(4).map(|c| i32::from_ne_bytes(c.try_into().unwrap())).collect()
    }

    #[test]
    fn contiguous_copy_is_exact() {
        let src = bytes_of(&[1, 2, 3, 4, 5, 6]);
        // SAFETY: a 2x3 C-ordered view of `src`, which outlives it.
        let view = unsafe { Strided::new(src.as_ptr(), DType::I32, &[2, 3], &[12, 4]) };
        let mut out = vec![0u8; 24];
        view.copy_to(&mut out);
        assert_eq!(out, src);
    }

    #[test]
    fn transposed_and_reversed_views_copy_in_c_order() {
        let src = bytes_of(&[1, 2, 3, 4, 5, 6]);
        let mut out = vec![0u8; 24];
        // SAFETY: the transpose (3x2) of the 2x3 array in `src`.
        let t = unsafe { Strided::new(src.as_ptr(), DType::I32, &[3, 2], &[4, 12]) };
        t.copy_to(&mut out);
        assert_eq!(ints(&out), [1, 4, 2, 5, 3, 6]);
        // SAFETY: `src` read backwards, starting at its last element.
        let r = unsafe { Strided::new(src.as_ptr().add(20), DType::I32, &[6], &[-4]) };
        r.copy_to(&mut out);
        assert_eq!(ints(&out), [6, 5, 4, 3, 2, 1]);
        // SAFETY: one element broadcast along a zero stride.
        let b = unsafe { Strided::new(src.as_ptr(), DType::I32, &[6], &[0]) };
        b.copy_to(&mut out);
        assert_eq!(ints(&out), [1; 6]);
    }

    #[test]
    fn at_selects_along_the_first_axis() {
        let src = bytes_of(&[1, 2, 3, 4, 5, 6]);
        // SAFETY: a 2x3 C-ordered view of `src`.
        let view = unsafe { Strided::new(src.as_ptr(), DType::I32, &[2, 3], &[12, 4]) };
        let mut out = vec![0u8; 12];
        view.at(1).copy_to(&mut out);
        assert_eq!(ints(&out), [4, 5, 6]);
    }

    #[test]
    fn convert_and_visit_values() {
        let src = bytes_of(&[-1, 0, 70000]);
        // SAFETY: a 1-d view of `src`.
        let view = unsafe { Strided::new(src.as_ptr(), DType::I32, &[3], &[4]) };
        let mut out = vec![0u8; 24];
        view.convert_to(DType::F64, &mut out);
        let floats: Vec<f64> = out.chunks_exact(8).map(|c| f64::from_ne_bytes(c.try_into().unwrap())).collect();
        assert_eq!(floats, [-1.0, 0.0, 70000.0]);
        let mut seen = Vec::new();
        let stop = view.try_for_each_value(|i, v| {
            seen.push((i, v));
            if i == 1 { Err("stop") } else { Ok(()) }
        });
        assert_eq!(stop, Err("stop"));
        assert_eq!(seen, [(0, Value::Int(-1)), (1, Value::Int(0))]);
    }

    proptest::proptest! {
        /// Any axis permutation and reversal of a C-ordered array copies
        /// out in the view's own C order, same dtype or converted.
        #[test]
        fn strided_views_copy_in_c_order(
            dims in proptest::collection::vec(1usize..5, 0..4),
            seed in proptest::prelude::any::<u64>(),
        ) {
            let len: usize = dims.iter().product();
            let values: Vec<i32> = (0..len as i32).collect();
            let src = bytes_of(&values);
            // C strides of the base array, then a permutation and reversals.
            let mut base_strides = vec![4isize; dims.len()];
            for axis in (0..dims.len().saturating_sub(1)).rev() {
                base_strides[axis] = base_strides[axis + 1] * dims[axis + 1] as isize;
            }
            let mut order: Vec<usize> = (0..dims.len()).collect();
            order.sort_by_key(|&a| (seed >> (a * 8)) & 0xff);
            let shape: Vec<usize> = order.iter().map(|&a| dims[a]).collect();
            let mut strides: Vec<isize> = order.iter().map(|&a| base_strides[a]).collect();
            let mut start = 0isize;
            for (axis, stride) in strides.iter_mut().enumerate() {
                if (seed >> (32 + axis)) & 1 == 1 {
                    start += *stride * (shape[axis] as isize - 1);
                    *stride = -*stride;
                }
            }
            // The expected values, by explicit index arithmetic.
            let mut expected = Vec::with_capacity(len);
            for flat in 0..len {
                let (mut rest, mut offset) = (flat, start);
                for axis in (0..shape.len()).rev() {
                    offset += (rest % shape[axis]) as isize * strides[axis];
                    rest /= shape[axis];
                }
                expected.push(values[(offset / 4) as usize]);
            }
            // SAFETY: every index of the permuted, reversed view lands inside `src`.
            let view = unsafe { Strided::new(src.as_ptr().offset(start), DType::I32, &shape, &strides) };
            let mut out = vec![0u8; len * 4];
            view.copy_to(&mut out);
            proptest::prop_assert_eq!(ints(&out), expected.clone());
            let mut wide = vec![0u8; len * 8];
            view.convert_to(DType::I64, &mut wide);
            let wide: Vec<i32> = wide.chunks_exact(8).map(|c| i64::from_ne_bytes(c.try_into().unwrap()) as i32).collect();
            proptest::prop_assert_eq!(wide, expected);
        }
    }

    #[test]
    fn empty_arrays_copy_nothing() {
        // SAFETY: zero elements are never read.
        let view = unsafe { Strided::new(std::ptr::null(), DType::U8, &[0, 5], &[5, 1]) };
        view.copy_to(&mut []);
        assert!(view.try_for_each_value(|_, _| Err(())).is_ok());
    }
}
