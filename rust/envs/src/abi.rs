//! Envs from other crates, loaded at run time: a versioned C ABI.
//!
//! A crate of envs (see `examples/native_game`) is its own Python extension
//! module, built with maturin against its own copy of this crate. It hands
//! pufferrs a table of plain `extern "C"` functions and `#[repr(C)]` data
//! ([`EnvTables`], made by [`export`]) in a Python capsule named
//! [`CAPSULE_NAME`]; pufferrs reads it with [`load`]. No Rust type crosses
//! the boundary: rows are pointers and sizes, statuses are bytes, errors
//! are messages in a buffer the caller owns, and a panic is caught on the
//! side where it happened (unwinding out of an `extern "C"` function would
//! abort the process).
//!
//! Checked when loading, before anything else is trusted: the ABI version
//! (the first field), the sizes of both structs, and for each env the
//! layout its crate was built for (row sizes and a fingerprint of every
//! leaf's path, dtype, shape and offset) against the layout pufferrs makes
//! of the same spaces.

use std::ffi::{CStr, c_char, c_void};

use pufferrs_core::layout::{Layout, Rule, Space};
use pufferrs_core::names::format_path;

use crate::env::Status;

/// The version of this ABI; any change to the structs or functions below
/// changes it.
pub const ABI_VERSION: u32 = 1;

/// The name of the capsule a crate of envs exports its tables in, as the
/// module attribute `pufferrs_envs`.
pub const CAPSULE_NAME: &CStr = c"pufferrs_envs.tables";

/// Where a function writes why it failed: `capacity` bytes at `buffer`
/// (owned by the caller); the function sets `length` (UTF-8, truncated).
#[repr(C)]
pub struct ErrorOut {
    pub buffer: *mut u8,
    pub capacity: usize,
    pub length: usize,
}

/// One env's rows for a reset or step: `agents` observation rows of
/// `row_bytes` at `observations`, a reward (f64) and a status byte per
/// agent, and (for a step) `agents` action rows of `action_bytes`.
#[repr(C)]
pub struct RowsC {
    pub observations: *mut u8,
    pub row_bytes: usize,
    pub rewards: *mut f64,
    pub status: *mut u8,
    pub agents: usize,
    pub actions: *const u8,
    pub action_bytes: usize,
}

pub type MakeFn = unsafe extern "C" fn(context: *const c_void, env: *mut *mut c_void, error: *mut ErrorOut) -> i32;
pub type ResetFn =
    unsafe extern "C" fn(env: *mut c_void, has_seed: u8, seed: u64, rows: *const RowsC, error: *mut ErrorOut) -> i32;
pub type StepFn = unsafe extern "C" fn(env: *mut c_void, rows: *const RowsC, error: *mut ErrorOut) -> i32;
pub type DropFn = unsafe extern "C" fn(env: *mut c_void);

/// One kind of env of a crate.
#[repr(C)]
pub struct EnvTable {
    /// Agents per env (one row each); 0 for a single-agent env.
    pub agents: u32,
    pub observation_row_bytes: u64,
    pub action_row_bytes: u64,
    /// [`fingerprint`] of the layouts the crate's envs were bound to.
    pub layout_fingerprint: u64,
    /// NUL-terminated UTF-8: the env's id, and its spaces as JSON
    /// (`{"observation": ..., "action": ..., "agents": [...] or null}`,
    /// each space as `pufferrs.spaces.describe` describes one).
    pub id: *const c_char,
    pub spaces: *const c_char,
    /// The crate's own handle on the kind, passed back to `make`.
    pub context: *const c_void,
    pub make: MakeFn,
    pub reset: ResetFn,
    pub step: StepFn,
    pub drop: DropFn,
}

/// What a crate exports: `count` tables at `tables`.
#[repr(C)]
pub struct EnvTables {
    /// [`ABI_VERSION`] of the crate's copy of this module: read first.
    pub abi_version: u32,
    /// `size_of::<EnvTables>()` and `size_of::<EnvTable>()` in the crate.
    pub tables_size: u32,
    pub table_size: u32,
    pub count: u32,
    pub tables: *const EnvTable,
    /// NUL-terminated: the crate's pufferrs-envs version, for messages.
    pub version: *const c_char,
}

// SAFETY: the tables are immutable once exported ('static, never written)
// and their pointers address 'static data of the exporting crate; the
// functions may be called from any thread (each env by one at a time).
unsafe impl Sync for EnvTables {}
// SAFETY: as above.
unsafe impl Send for EnvTables {}
// SAFETY: as above.
unsafe impl Sync for EnvTable {}
// SAFETY: as above.
unsafe impl Send for EnvTable {}

/// A 64-bit FNV-1a hash of both layouts: row size, and every leaf's path,
/// dtype, shape, offset and kind. Two crates that lay a space out alike
/// get the same number.
pub fn fingerprint(observation: &Layout, action: &Layout) -> u64 {
    let mut text = String::new();
    for (root, layout) in [("obs", observation), ("action", action)] {
        text += &format!("{root}:{}:{};", layout.row_bytes, layout.align);
        for leaf in &layout.leaves {
            let kind = match leaf.rule {
                Rule::Box { .. } => "Box",
                Rule::Discrete { .. } => "Discrete",
                Rule::MultiDiscrete { .. } => "MultiDiscrete",
                Rule::MultiBinary => "MultiBinary",
                Rule::Text { .. } => "Text",
            };
            text += &format!(
                "{}|{}|{:?}|{}|{kind};",
                format_path(root, &leaf.path),
                leaf.dtype.name(),
                leaf.shape,
                leaf.offset
            );
        }
    }
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// `space` as JSON, in the form of `pufferrs.spaces.describe` (infinite
/// bounds as `Infinity`, which Python's `json` reads).
pub fn space_json(space: &Space) -> String {
    fn number(value: &pufferrs_core::dtype::Value) -> String {
        match *value {
            pufferrs_core::dtype::Value::Int(v) => v.to_string(),
            pufferrs_core::dtype::Value::Float(v) if v.is_nan() => "NaN".into(),
            pufferrs_core::dtype::Value::Float(v) if v.is_infinite() => {
                if v > 0.0 {
                    "Infinity".into()
                } else {
                    "-Infinity".into()
                }
            }
            pufferrs_core::dtype::Value::Float(v) => format!("{v:?}"),
        }
    }
    fn list<T>(items: &[T], each: impl Fn(&T) -> String) -> String {
        format!("[{}]", items.iter().map(each).collect::<Vec<_>>().join(", "))
    }
    match space {
        Space::Box { dtype, shape, low, high } => format!(
            r#"{{"kind": "Box", "dtype": "{}", "shape": {}, "low": {}, "high": {}}}"#,
            dtype.name(),
            list(shape, usize::to_string),
            list(low, number),
            list(high, number)
        ),
        Space::Discrete { dtype, n, start } => {
            format!(r#"{{"kind": "Discrete", "dtype": "{}", "n": {n}, "start": {start}}}"#, dtype.name())
        }
        Space::MultiDiscrete { dtype, shape, nvec, start } => format!(
            r#"{{"kind": "MultiDiscrete", "dtype": "{}", "shape": {}, "nvec": {}, "start": {}}}"#,
            dtype.name(),
            list(shape, usize::to_string),
            list(nvec, i128::to_string),
            list(start, i128::to_string)
        ),
        Space::MultiBinary { dtype, shape } => format!(
            r#"{{"kind": "MultiBinary", "dtype": "{}", "shape": {}}}"#,
            dtype.name(),
            list(shape, usize::to_string)
        ),
        Space::Text { charset, min_length, max_length } => format!(
            r#"{{"kind": "Text", "charset": {}, "min_length": {min_length}, "max_length": {max_length}}}"#,
            json_string(&charset.iter().collect::<String>())
        ),
        Space::Dict(items) => format!(
            r#"{{"kind": "Dict", "items": {}}}"#,
            list(items, |(key, sub)| format!("[{}, {}]", json_string(key), space_json(sub)))
        ),
        Space::Tuple(items) => format!(r#"{{"kind": "Tuple", "items": {}}}"#, list(items, space_json)),
        Space::Unsupported(reason) => format!(r#"{{"kind": "Unsupported", "reason": {}}}"#, json_string(reason)),
    }
}

fn json_string(text: &str) -> String {
    let mut out = String::from('"');
    for c in text.chars() {
        match c {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            c if (c as u32) < 0x20 => out += &format!("\\u{:04x}", c as u32),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn status_byte(status: Status) -> u8 {
    match status {
        Status::Absent => 0,
        Status::Acting => 1,
        Status::Waiting => 2,
        Status::Ended { terminated, truncated } => 4 | u8::from(terminated) | (u8::from(truncated) << 1),
    }
}

fn status_of(byte: u8) -> Option<Status> {
    Some(match byte {
        0 => Status::Absent,
        1 => Status::Acting,
        2 => Status::Waiting,
        4..=7 => Status::Ended { terminated: byte & 1 != 0, truncated: byte & 2 != 0 },
        _ => return None,
    })
}

// The exporting side (what runs in the crate of envs) and the loading side
// (what runs in pufferrs), each in its own file.
mod export;
mod load;

pub use export::export;
pub use load::{Spaces, load};
