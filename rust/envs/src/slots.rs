//! Typed accessors of a row: an env resolves each leaf it reads or writes
//! once, by its path, when it is bound to a layout ([`Binding`]); the
//! dtype and shape it expects are checked then, so that a step writes
//! values at known offsets with no lookup and no check of its own.

use std::marker::PhantomData;

use pufferrs_core::dtype::{DType, Value};
use pufferrs_core::error::{Error, Result};
use pufferrs_core::layout::{Layout, Leaf, Rule, Space};
use pufferrs_core::names::{Key, format_path, format_shape};

/// A numeric type a leaf is stored in, read and written in native byte
/// order as the rows hold it.
pub trait Element: Copy + Send + Sync + 'static {
    const DTYPE: DType;
    fn put(self, out: &mut [u8]);
    fn take(bytes: &[u8]) -> Self;
}

macro_rules! element {
    ($($t:ty => $dtype:ident),* $(,)?) => {$(
        impl Element for $t {
            const DTYPE: DType = DType::$dtype;
            #[inline]
            fn put(self, out: &mut [u8]) {
                out[..size_of::<$t>()].copy_from_slice(&self.to_ne_bytes());
            }
            #[inline]
            fn take(bytes: &[u8]) -> Self {
                <$t>::from_ne_bytes(bytes[..size_of::<$t>()].try_into().expect("a slice of the item's size"))
            }
        }
    )*};
}

element!(f32 => F32, f64 => F64, i8 => I8, i16 => I16, i32 => I32, i64 => I64, u8 => U8, u16 => U16, u32 => U32, u64 => U64);

/// The elements of one leaf of a row, of type `T` (C order). Indexing past
/// the leaf panics, as a slice does: an env's bug, which the block reports
/// as the env's failure.
#[derive(Debug)]
pub struct Slot<T> {
    offset: usize,
    len: usize,
    _element: PhantomData<T>,
}

impl<T> Clone for Slot<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Slot<T> {}

impl<T: Element> Slot<T> {
    const SIZE: usize = size_of::<T>();

    /// How many elements the leaf has.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn at(&self, index: usize) -> usize {
        assert!(index < self.len, "element {index} of a leaf of {}", self.len);
        self.offset + index * Self::SIZE
    }

    /// Element `index` of the leaf in `row`.
    #[inline]
    pub fn get(&self, row: &[u8], index: usize) -> T {
        T::take(&row[self.at(index)..])
    }

    /// Sets element `index` of the leaf in `row`.
    #[inline]
    pub fn set(&self, row: &mut [u8], index: usize, value: T) {
        value.put(&mut row[self.at(index)..]);
    }

    /// Writes the whole leaf: `values` holds every element, in C order.
    pub fn write(&self, row: &mut [u8], values: &[T]) {
        assert_eq!(values.len(), self.len, "a leaf of {} elements written with {}", self.len, values.len());
        let bytes = &mut row[self.offset..self.offset + self.len * Self::SIZE];
        for (out, &value) in bytes.chunks_exact_mut(Self::SIZE).zip(values) {
            value.put(out);
        }
    }

    /// Sets every element of the leaf to `value`.
    pub fn fill(&self, row: &mut [u8], value: T) {
        let bytes = &mut row[self.offset..self.offset + self.len * Self::SIZE];
        for out in bytes.chunks_exact_mut(Self::SIZE) {
            value.put(out);
        }
    }

    /// Every element of the leaf in `row`, in C order.
    pub fn read<'r>(&self, row: &'r [u8]) -> impl Iterator<Item = T> + 'r {
        row[self.offset..self.offset + self.len * Self::SIZE].chunks_exact(Self::SIZE).map(T::take)
    }
}

/// A string leaf (gymnasium's `Text`), encoded as the core encodes strings
/// in rows.
#[derive(Clone, Debug)]
pub struct TextSlot {
    leaf: Leaf,
}

impl TextSlot {
    /// Writes `text` into the leaf; a string the space does not allow
    /// (too long, a character outside its charset) is refused with why,
    /// and the row is left as it was.
    pub fn write(&self, row: &mut [u8], text: &str) -> std::result::Result<(), String> {
        let codes = self.leaf.encode_text(text)?;
        let size = self.leaf.dtype.itemsize();
        let bytes = &mut row[self.leaf.offset..self.leaf.offset + self.leaf.nbytes()];
        for (out, code) in bytes.chunks_exact_mut(size).zip(codes) {
            self.leaf.dtype.write(code, out);
        }
        Ok(())
    }

    /// The string in the leaf of `row`.
    pub fn read(&self, row: &[u8]) -> std::result::Result<String, String> {
        let size = self.leaf.dtype.itemsize();
        let codes: Vec<i128> = row[self.leaf.offset..self.leaf.offset + self.leaf.nbytes()]
            .chunks_exact(size)
            .map(|code| match self.leaf.dtype.read(code) {
                Value::Int(code) => code,
                Value::Float(code) => code as i128,
            })
            .collect();
        self.leaf.decode_text(&codes)
    }
}

/// The layouts of an env's observation and action rows, made once per kind
/// of env from its spaces, and the accessors its envs resolve from them.
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    observation: Layout,
    action: Layout,
}

impl Binding {
    /// The layouts of `observation` (named `obs` in messages) and `action`;
    /// a space that has no flat row is refused with its path.
    pub fn new(observation: &Space, action: &Space) -> Result<Binding> {
        Ok(Binding { observation: Layout::new(observation, "obs")?, action: Layout::new(action, "action")? })
    }

    pub fn observation_layout(&self) -> &Layout {
        &self.observation
    }

    pub fn action_layout(&self) -> &Layout {
        &self.action
    }

    /// The observation leaf at `path` (names of Dict keys, decimal indices
    /// of Tuple items; empty for a space that is one leaf), checked to be
    /// stored as `T` with `shape`.
    pub fn obs<T: Element>(&self, path: &[&str], shape: &[usize]) -> Result<Slot<T>> {
        slot(&self.observation, "obs", path, shape)
    }

    /// The action leaf at `path`, as [`Binding::obs`].
    pub fn action<T: Element>(&self, path: &[&str], shape: &[usize]) -> Result<Slot<T>> {
        slot(&self.action, "action", path, shape)
    }

    /// The string observation leaf at `path`.
    pub fn obs_text(&self, path: &[&str]) -> Result<TextSlot> {
        let leaf = find(&self.observation, "obs", path)?;
        if !matches!(leaf.rule, Rule::Text { .. }) {
            return Err(mismatch("obs", path, "the env writes a string there, but the space's leaf is not one".into()));
        }
        Ok(TextSlot { leaf: leaf.clone() })
    }
}

fn named(root: &str, path: &[&str]) -> String {
    let keys: Vec<Key> = path
        .iter()
        .map(|part| part.parse().map(Key::Index).unwrap_or_else(|_| Key::Name((*part).to_owned())))
        .collect();
    format_path(root, &keys)
}

fn mismatch(root: &str, path: &[&str], reason: String) -> Error {
    Error::Mismatch { path: named(root, path), reason }
}

/// The leaf of `layout` at `path` (a decimal part matches a Tuple index).
fn find<'l>(layout: &'l Layout, root: &str, path: &[&str]) -> Result<&'l Leaf> {
    let matches = |leaf: &Leaf| {
        leaf.path.len() == path.len()
            && leaf.path.iter().zip(path).all(|(key, part)| match key {
                Key::Name(name) => name == part,
                Key::Index(i) => part.parse() == Ok(*i),
            })
    };
    layout.leaves.iter().find(|leaf| matches(leaf)).ok_or_else(|| {
        let leaves: Vec<String> = layout.leaves.iter().map(|leaf| format_path(root, &leaf.path)).collect();
        mismatch(root, path, format!("the space has no leaf there (its leaves: {})", leaves.join(", ")))
    })
}

fn slot<T: Element>(layout: &Layout, root: &str, path: &[&str], shape: &[usize]) -> Result<Slot<T>> {
    let leaf = find(layout, root, path)?;
    if leaf.dtype != T::DTYPE || leaf.shape != shape || matches!(leaf.rule, Rule::Text { .. }) {
        let what =
            if matches!(leaf.rule, Rule::Text { .. }) { "a string".to_owned() } else { leaf.dtype.name().into() };
        return Err(mismatch(
            root,
            path,
            format!(
                "the env reads and writes {} of shape {}, but the space's leaf is {what} of shape {}",
                T::DTYPE.name(),
                format_shape(shape),
                format_shape(&leaf.shape)
            ),
        ));
    }
    Ok(Slot { offset: leaf.offset, len: leaf.len(), _element: PhantomData })
}
