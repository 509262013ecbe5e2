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

    /// Calls `f` with the byte offset of every element, in C order. The
    /// last axis runs in a tight loop of its own: it is where the elements are.
    fn for_each_offset(&self, mut f: impl FnMut(isize)) {
        if self.is_empty() {
            return;
        }
        let (Some((&inner, outer)), Some((&step, outer_strides))) =
            (self.shape.split_last(), self.strides.split_last())
        else {
            return f(0); // 0-d: one element
        };
        let mut index = vec![0usize; outer.len()];
        let mut start = 0isize;
        loop {
            let mut offset = start;
            for _ in 0..inner {
                f(offset);
                offset += step;
            }
            let mut axis = outer.len();
            loop {
                if axis == 0 {
                    return;
                }
                axis -= 1;
                index[axis] += 1;
                start += outer_strides[axis];
                if index[axis] < outer[axis] {
                    break;
                }
                start -= outer_strides[axis] * outer[axis] as isize;
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

    /// The byte addresses the elements span, `[first, last + itemsize)`;
    /// None when there are no elements.
    pub fn extent(&self) -> Option<(usize, usize)> {
        if self.is_empty() {
            return None;
        }
        // Saturating: numpy keeps every element of a real array inside its
        // memory, so only a nonsense view could reach the limits.
        let (mut low, mut high) = (0isize, 0isize);
        for (&dim, &stride) in self.shape.iter().zip(self.strides) {
            let reach = stride.saturating_mul(dim as isize - 1);
            if reach < 0 {
                low = low.saturating_add(reach);
            } else {
                high = high.saturating_add(reach);
            }
        }
        let base = self.data as usize;
        let end = base.saturating_add_signed(high).saturating_add(self.dtype.itemsize());
        Some((base.saturating_add_signed(low), end))
    }

    /// Whether any element lies in the byte addresses `[start, end)`.
    pub fn overlaps(&self, (start, end): (usize, usize)) -> bool {
        self.extent().is_some_and(|(low, high)| low < end && start < high)
    }

    /// Writes the elements, in C order, into `out` as `dtype` stores them:
    /// raw bytes when the dtypes match, values cast otherwise (the caller
    /// knows that every value fits, see `DType::casts_every`). Bools are
    /// written as 0 or 1 whatever byte the source holds, so that equal
    /// values give equal rows. `out` must be exactly `len()` elements of
    /// `dtype`.
    pub fn store_as(&self, dtype: DType, out: &mut [u8]) {
        if dtype == self.dtype && dtype != DType::Bool {
            self.copy_to(out);
        } else {
            self.convert_to(dtype, out);
        }
    }

    /// Like `store_as`, for values that must be checked: reads every
    /// element of the source exactly once and passes its value to `f` with
    /// its flat index; `f` checks it and returns it as `dtype` stores it
    /// (what `DType::cast` gives), which is written. Stops at the first
    /// error. What is stored is what was checked, even if the source
    /// changes meanwhile. `out` must be memory that nobody else writes
    /// meanwhile (a staging area): same-dtype values are copied into it
    /// first, as fast as the copy goes, and checked there.
    pub fn try_store_as<E>(
        &self,
        dtype: DType,
        out: &mut [u8],
        mut f: impl FnMut(usize, Value) -> Result<Value, E>,
    ) -> Result<(), E> {
        let itemsize = dtype.itemsize();
        assert_eq!(out.len(), self.len() * itemsize, "destination size");
        if dtype == self.dtype {
            self.copy_to(out);
            for (index, chunk) in out.chunks_exact_mut(itemsize).enumerate() {
                let value = f(index, dtype.read(chunk))?;
                // A cast to the same dtype changes nothing but a bool's byte.
                if dtype == DType::Bool {
                    dtype.write(value, chunk);
                }
            }
            return Ok(());
        }
        // A cast may narrow (1000 into an int8 is -24), so values are
        // checked as read from the source, before they are narrowed.
        let mut chunks = out.chunks_exact_mut(itemsize);
        let mut index = 0;
        let mut result = Ok(());
        self.for_each_offset(|offset| {
            if result.is_ok() {
                let chunk = chunks.next().expect("one chunk per element");
                result = f(index, self.dtype.read(self.element(offset))).map(|value| dtype.write(value, chunk));
                index += 1;
            }
        });
        result
    }

    /// Copies the elements, in C order and in the same dtype, into `out`,
    /// which must be exactly `len() * itemsize` bytes. Correct only when
    /// the elements do not overlap `out` (a contiguous source may, as a
    /// memmove; callers stage overlapping sources through `try_store_as`).
    fn copy_to(&self, out: &mut [u8]) {
        let itemsize = self.dtype.itemsize();
        assert_eq!(out.len(), self.len() * itemsize, "destination size");
        if out.is_empty() {
            return;
        }
        if self.is_c_contiguous() {
            // SAFETY: the source is `out.len()` contiguous readable bytes by
            // `new`'s contract; `ptr::copy` allows it to overlap `out`.
            unsafe { std::ptr::copy(self.data, out.as_mut_ptr(), out.len()) };
            return;
        }
        // One copy of a fixed size per element for the usual item sizes: a
        // copy of a size known only at run time is a call per element,
        // several times slower (a transposed batch of observations, as
        // gymnasium's numpy vector envs return them, takes this path).
        match itemsize {
            1 => self.copy_elements::<1>(out),
            2 => self.copy_elements::<2>(out),
            4 => self.copy_elements::<4>(out),
            8 => self.copy_elements::<8>(out),
            _ => {
                let mut chunks = out.chunks_exact_mut(itemsize);
                self.for_each_offset(|offset| {
                    let chunk = chunks.next().expect("one chunk per element");
                    chunk.copy_from_slice(self.element(offset));
                });
            }
        }
    }

    /// `copy_to` for an item size of `N` bytes.
    fn copy_elements<const N: usize>(&self, out: &mut [u8]) {
        debug_assert_eq!(self.dtype.itemsize(), N);
        if let ([rows, cols], [down, across]) = (self.shape, self.strides) {
            // A 2-d array (a transpose, as gymnasium's numpy vector envs
            // return their observations, or a strided view) in two plain
            // loops: each row of `out` gathers one element of every column,
            // the columns read as parallel streams.
            let (cols, down, across) = (*cols, *down, *across);
            for (row, out_row) in out.chunks_exact_mut(cols * N).take(*rows).enumerate() {
                let mut offset = row as isize * down;
                for item in out_row.chunks_exact_mut(N) {
                    let item: &mut [u8; N] = item.try_into().expect("N bytes");
                    // SAFETY: (row, col) is inside the shape, so `offset`
                    // (row * down + col * across) addresses one of the
                    // array's elements, readable for `N` bytes by `new`'s
                    // contract; unaligned reads are allowed anywhere.
                    *item = unsafe { std::ptr::read_unaligned(self.data.offset(offset).cast::<[u8; N]>()) };
                    offset += across;
                }
            }
            return;
        }
        let mut chunks = out.chunks_exact_mut(N);
        self.for_each_offset(|offset| {
            let chunk: &mut [u8; N] = chunks.next().expect("one chunk per element").try_into().expect("N bytes");
            // SAFETY: as in `element`: `offset` addresses an element inside
            // the array, readable for `N` (its itemsize) bytes; unaligned
            // reads are allowed for any address.
            *chunk = unsafe { std::ptr::read_unaligned(self.data.offset(offset).cast::<[u8; N]>()) };
        });
    }

    /// Converts the elements, in C order, into `dtype` in `out`.
    fn convert_to(&self, dtype: DType, out: &mut [u8]) {
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
    fn transposed_copies_match_element_by_element_for_every_item_size() {
        // A 3x5 array of each item size, copied transposed (5x3): element
        // (i, j) of the copy is element (j, i) of the source.
        for (dtype, itemsize) in [(DType::U8, 1), (DType::I16, 2), (DType::F32, 4), (DType::F64, 8)] {
            let src: Vec<u8> = (0..15 * itemsize).map(|b| b as u8).collect();
            let strides = [itemsize as isize, 5 * itemsize as isize];
            // SAFETY: the transpose of the 3x5 array in `src`, which outlives it.
            let t = unsafe { Strided::new(src.as_ptr(), dtype, &[5, 3], &strides) };
            let mut out = vec![0u8; src.len()];
            t.copy_to(&mut out);
            for i in 0..5 {
                for j in 0..3 {
                    let got = &out[(i * 3 + j) * itemsize..][..itemsize];
                    assert_eq!(got, &src[(j * 5 + i) * itemsize..][..itemsize], "{dtype:?} ({i}, {j})");
                }
            }
            // The same transpose read backwards along both axes, from the last element.
            let back = [-(itemsize as isize), -5 * itemsize as isize];
            // SAFETY: every element it addresses is one of `src`'s, which outlives it.
            let r = unsafe { Strided::new(src.as_ptr().add(14 * itemsize), dtype, &[5, 3], &back) };
            r.copy_to(&mut out);
            for i in 0..5 {
                for j in 0..3 {
                    let got = &out[(i * 3 + j) * itemsize..][..itemsize];
                    let want = ((2 - j) * 5 + 4 - i) * itemsize;
                    assert_eq!(got, &src[want..][..itemsize], "{dtype:?} reversed ({i}, {j})");
                }
            }
        }
    }

    #[test]
    fn extents_span_gaps_and_broadcasts() {
        let src = bytes_of(&[1, 2, 3, 4, 5, 6]);
        let base = src.as_ptr() as usize;
        // SAFETY: every other element of `src`, then one broadcast element.
        let gapped = unsafe { Strided::new(src.as_ptr(), DType::I32, &[3], &[8]) };
        assert_eq!(gapped.extent(), Some((base, base + 20)));
        // SAFETY: as above.
        let broadcast = unsafe { Strided::new(src.as_ptr().add(4), DType::I32, &[5, 2], &[0, -4]) };
        assert_eq!(broadcast.extent(), Some((base, base + 8)));
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
    fn convert_and_check_values() {
        let src = bytes_of(&[-1, 0, 70000]);
        // SAFETY: a 1-d view of `src`.
        let view = unsafe { Strided::new(src.as_ptr(), DType::I32, &[3], &[4]) };
        let mut out = vec![0u8; 24];
        view.store_as(DType::F64, &mut out);
        let floats: Vec<f64> = out.chunks_exact(8).map(|c| f64::from_ne_bytes(c.try_into().unwrap())).collect();
        assert_eq!(floats, [-1.0, 0.0, 70000.0]);
        let mut seen = Vec::new();
        let mut out = vec![0u8; 24];
        let stop = view.try_store_as(DType::I64, &mut out, |i, v| {
            seen.push((i, v));
            if i == 1 { Err("stop") } else { Ok(Value::Int(7)) }
        });
        assert_eq!(stop, Err("stop"));
        assert_eq!(seen, [(0, Value::Int(-1)), (1, Value::Int(0))]);
        // What is written is what the check returned, not a second read.
        assert_eq!(i64::from_ne_bytes(out[..8].try_into().unwrap()), 7);
        assert!(out[8..].iter().all(|&b| b == 0));
    }

    #[test]
    fn bools_are_stored_as_zero_or_one() {
        let src = [2u8, 0, 1, 255];
        // SAFETY: a 1-d view of `src`.
        let view = unsafe { Strided::new(src.as_ptr(), DType::Bool, &[4], &[1]) };
        let mut out = [9u8; 4];
        view.store_as(DType::Bool, &mut out);
        assert_eq!(out, [1, 0, 1, 1]);
        view.try_store_as(DType::Bool, &mut out, |_, v| Ok::<_, ()>(v)).unwrap();
        assert_eq!(out, [1, 0, 1, 1]);
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
            view.store_as(DType::I32, &mut out);
            proptest::prop_assert_eq!(ints(&out), expected.clone());
            let mut wide = vec![0u8; len * 8];
            view.store_as(DType::I64, &mut wide);
            let wide: Vec<i32> = wide.chunks_exact(8).map(|c| i64::from_ne_bytes(c.try_into().unwrap()) as i32).collect();
            proptest::prop_assert_eq!(&wide, &expected);
            let mut checked = vec![0u8; len * 4];
            view.try_store_as(DType::I32, &mut checked, |_, v| Ok::<_, ()>(v)).unwrap();
            proptest::prop_assert_eq!(ints(&checked), expected);
            // The extent is the first and last element's addresses, whatever
            // the order of the axes.
            if len > 0 {
                let base = src.as_ptr() as usize;
                proptest::prop_assert_eq!(view.extent(), Some((base, base + len * 4)));
                proptest::prop_assert!(view.overlaps((base + len * 4 - 1, base + len * 4)));
                proptest::prop_assert!(!view.overlaps((base + len * 4, usize::MAX)));
                proptest::prop_assert!(!view.overlaps((0, base)));
            }
        }
    }

    #[test]
    fn empty_arrays_copy_nothing() {
        // SAFETY: zero elements are never read.
        let view = unsafe { Strided::new(std::ptr::null(), DType::U8, &[0, 5], &[5, 1]) };
        view.copy_to(&mut []);
        assert!(view.try_store_as(DType::U8, &mut [], |_, _| Err(())).is_ok());
        assert_eq!(view.extent(), None);
        assert!(!view.overlaps((0, usize::MAX)));
    }
}
