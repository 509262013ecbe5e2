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

use std::ffi::{CStr, CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use pufferrs_core::layout::{Layout, Rule, Space};
use pufferrs_core::names::format_path;

use crate::env::{Actions, Agents, EnvKind, MultiAgentEnv, Status};

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

// ---------------------------------------------------------------------------
// The exporting side: what runs in the crate of envs.

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

/// Writes `message` into `error` (truncated to its capacity, on a
/// character boundary).
///
/// # Safety
/// `error` is null or points to an `ErrorOut` whose buffer holds
/// `capacity` writeable bytes.
unsafe fn report(error: *mut ErrorOut, message: &str) {
    // SAFETY: the caller's contract.
    let Some(error) = (unsafe { error.as_mut() }) else { return };
    let mut length = message.len().min(error.capacity);
    while !message.is_char_boundary(length) {
        length -= 1;
    }
    if !error.buffer.is_null() {
        // SAFETY: `length <= capacity` bytes of the caller's buffer.
        unsafe { std::ptr::copy_nonoverlapping(message.as_ptr(), error.buffer, length) };
        error.length = length;
    }
}

/// Runs `body`, turning an error or a panic into a message and 1.
///
/// # Safety
/// As [`report`].
unsafe fn guarded(error: *mut ErrorOut, body: impl FnOnce() -> Result<(), String>) -> i32 {
    let outcome = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        Err(payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic with no message".into()))
    });
    match outcome {
        Ok(()) => 0,
        Err(message) => {
            // SAFETY: the caller's contract.
            unsafe { report(error, &message) };
            1
        }
    }
}

/// The statuses and `Agents` of `rows`, handed to `call`, the statuses
/// written back.
///
/// # Safety
/// `rows` describes memory valid as `RowsC` says, used by no one else
/// during the call.
unsafe fn with_agents(rows: &RowsC, call: impl FnOnce(&mut Agents<'_>, &Actions<'_>)) -> Result<(), String> {
    let n = rows.agents;
    // SAFETY: the caller's contract: `agents` statuses, rewards and rows.
    let (status_bytes, rewards, observations) = unsafe {
        (
            std::slice::from_raw_parts_mut(rows.status, n),
            std::slice::from_raw_parts_mut(rows.rewards, n),
            std::slice::from_raw_parts_mut(rows.observations, n * rows.row_bytes),
        )
    };
    let actions: &[u8] = if rows.actions.is_null() {
        &[]
    } else {
        // SAFETY: the caller's contract: `agents` action rows.
        unsafe { std::slice::from_raw_parts(rows.actions, n * rows.action_bytes) }
    };
    let mut status = status_bytes
        .iter()
        .map(|&byte| status_of(byte).ok_or_else(|| format!("status byte {byte} is not a status")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut agents = Agents { row_bytes: rows.row_bytes, observations, rewards, status: &mut status };
    call(&mut agents, &Actions { row_bytes: rows.action_bytes, rows: actions });
    for (byte, &status) in status_bytes.iter_mut().zip(&status) {
        *byte = status_byte(status);
    }
    Ok(())
}

unsafe extern "C" fn make_env(context: *const c_void, env: *mut *mut c_void, error: *mut ErrorOut) -> i32 {
    // SAFETY: `context` is the 'static kind `export` stored, `env` a
    // pointer to write the new env's handle to.
    unsafe {
        guarded(error, || {
            let kind = &*context.cast::<EnvKind>();
            let made: Box<dyn MultiAgentEnv> = kind.make().map_err(|e| e.to_string())?;
            *env = Box::into_raw(Box::new(made)).cast();
            Ok(())
        })
    }
}

unsafe extern "C" fn reset_env(
    env: *mut c_void,
    has_seed: u8,
    seed: u64,
    rows: *const RowsC,
    error: *mut ErrorOut,
) -> i32 {
    // SAFETY: `env` is a handle `make_env` made, used by one caller at a
    // time; `rows` as `with_agents` needs.
    unsafe {
        guarded(error, || {
            let env = &mut *env.cast::<Box<dyn MultiAgentEnv>>();
            let seed = (has_seed != 0).then_some(seed);
            with_agents(&*rows, |agents, _| env.reset(seed, agents))
        })
    }
}

unsafe extern "C" fn step_env(env: *mut c_void, rows: *const RowsC, error: *mut ErrorOut) -> i32 {
    // SAFETY: as in `reset_env`.
    unsafe {
        guarded(error, || {
            let env = &mut *env.cast::<Box<dyn MultiAgentEnv>>();
            with_agents(&*rows, |agents, actions| env.step(actions, agents))
        })
    }
}

unsafe extern "C" fn drop_env(env: *mut c_void) {
    if !env.is_null() {
        // SAFETY: a handle `make_env` made, dropped once; a panic in the
        // env's `Drop` must not unwind into the caller.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(env.cast::<Box<dyn MultiAgentEnv>>()) })));
    }
}

fn leaked(text: String) -> *const c_char {
    CString::new(text).expect("no NUL inside").into_raw()
}

/// The tables of `kinds`, made once and kept for the life of the process,
/// for a crate's module to put in a capsule named [`CAPSULE_NAME`].
pub fn export(kinds: Vec<EnvKind>) -> &'static EnvTables {
    let tables: Vec<EnvTable> = kinds
        .into_iter()
        .map(|kind| {
            let binding = kind.binding();
            let agents = kind.agents().map_or("null".into(), |names| {
                format!("[{}]", names.iter().map(|name| json_string(name)).collect::<Vec<_>>().join(", "))
            });
            let spaces = format!(
                r#"{{"observation": {}, "action": {}, "agents": {agents}}}"#,
                space_json(kind.observation_space()),
                space_json(kind.action_space())
            );
            let table = EnvTable {
                agents: kind.agents().map_or(0, |names| names.len() as u32),
                observation_row_bytes: binding.observation_layout().row_bytes as u64,
                action_row_bytes: binding.action_layout().row_bytes as u64,
                layout_fingerprint: fingerprint(binding.observation_layout(), binding.action_layout()),
                id: leaked(kind.id().to_owned()),
                spaces: leaked(spaces),
                context: std::ptr::null(),
                make: make_env,
                reset: reset_env,
                step: step_env,
                drop: drop_env,
            };
            let context: &'static EnvKind = Box::leak(Box::new(kind));
            EnvTable { context: (context as *const EnvKind).cast(), ..table }
        })
        .collect();
    let tables: &'static [EnvTable] = Vec::leak(tables);
    Box::leak(Box::new(EnvTables {
        abi_version: ABI_VERSION,
        tables_size: size_of::<EnvTables>() as u32,
        table_size: size_of::<EnvTable>() as u32,
        count: tables.len() as u32,
        tables: tables.as_ptr(),
        version: leaked(env!("CARGO_PKG_VERSION").into()),
    }))
}

// ---------------------------------------------------------------------------
// The loading side: what runs in pufferrs.

/// An env of another crate, stepped through its table.
struct ForeignEnv {
    table: &'static EnvTable,
    handle: *mut c_void,
    status: Vec<u8>,
}

// SAFETY: the exporting crate's envs are `Send` (its `EnvKind` makes only
// `Send` envs), and the handle is used by one thread at a time (`&mut`).
unsafe impl Send for ForeignEnv {}

impl ForeignEnv {
    /// Calls the crate's `reset` or `step` on `agents`; its failure (an
    /// error or a caught panic) panics here, with its message, for the
    /// block to report as this env's failure.
    fn call(&mut self, agents: &mut Agents<'_>, actions: Option<&Actions<'_>>, seed: Option<Option<u64>>) {
        self.status.clear();
        self.status.extend(agents.status.iter().map(|&status| status_byte(status)));
        let rows = RowsC {
            observations: agents.observations.as_mut_ptr(),
            row_bytes: agents.row_bytes,
            rewards: agents.rewards.as_mut_ptr(),
            status: self.status.as_mut_ptr(),
            agents: agents.status.len(),
            actions: actions.map_or(std::ptr::null(), |a| a.rows.as_ptr()),
            action_bytes: actions.map_or(0, |a| a.row_bytes),
        };
        let mut buffer = [0u8; 1024];
        let mut error = ErrorOut { buffer: buffer.as_mut_ptr(), capacity: buffer.len(), length: 0 };
        // SAFETY: `rows` points into `agents` (its rows, rewards, and our
        // copy of its statuses) and `actions`, all alive and unaliased for
        // the call; `handle` came from this table's `make`.
        let code = unsafe {
            match seed {
                Some(seed) => {
                    (self.table.reset)(self.handle, seed.is_some() as u8, seed.unwrap_or(0), &rows, &mut error)
                }
                None => (self.table.step)(self.handle, &rows, &mut error),
            }
        };
        if code != 0 {
            panic!("{}", String::from_utf8_lossy(&buffer[..error.length.min(buffer.len())]));
        }
        for (status, &byte) in agents.status.iter_mut().zip(&self.status) {
            *status = status_of(byte).unwrap_or_else(|| panic!("the env's crate set status byte {byte}"));
        }
    }
}

impl MultiAgentEnv for ForeignEnv {
    fn reset(&mut self, seed: Option<u64>, agents: &mut Agents<'_>) {
        self.call(agents, None, Some(seed));
    }

    fn step(&mut self, actions: &Actions<'_>, agents: &mut Agents<'_>) {
        self.call(agents, Some(actions), None);
    }
}

impl Drop for ForeignEnv {
    fn drop(&mut self) {
        // SAFETY: the handle came from this table's `make`, dropped once.
        unsafe { (self.table.drop)(self.handle) }
    }
}

/// The spaces of an env as the loading side reads them from its table's
/// JSON: observation, action, agents' names.
pub type Spaces = (Space, Space, Option<Vec<String>>);

/// The kinds of env in the tables at `tables`, each checked (see the
/// module docs) and made into an [`EnvKind`] whose envs step through the
/// tables. `parse` reads a table's spaces JSON. An `Err` says what does
/// not match, for the user.
///
/// # Safety
/// `tables` points to an `EnvTables` as some version of [`export`] made
/// it, alive for the rest of the process (a loaded module's static data).
pub unsafe fn load(
    tables: *const EnvTables,
    parse: impl Fn(&str) -> Result<Spaces, String>,
) -> Result<Vec<EnvKind>, String> {
    // The version first: nothing else of a table of another version may be
    // read (its fields may sit elsewhere).
    // SAFETY: every version's table starts with the u32 version.
    let version = unsafe { tables.cast::<u32>().read() };
    if version != ABI_VERSION {
        return Err(format!(
            "the crate was built for pufferrs's env ABI version {version}; this pufferrs loads version \
             {ABI_VERSION}: rebuild the crate against pufferrs-envs {}",
            env!("CARGO_PKG_VERSION")
        ));
    }
    // SAFETY: a table of this version.
    let tables = unsafe { &*tables };
    if tables.tables_size as usize != size_of::<EnvTables>() || tables.table_size as usize != size_of::<EnvTable>() {
        return Err(format!(
            "the crate's tables are {} and {} bytes, this pufferrs's {} and {}: it was built for another platform \
             or a modified ABI; rebuild it",
            tables.tables_size,
            tables.table_size,
            size_of::<EnvTables>(),
            size_of::<EnvTable>()
        ));
    }
    // SAFETY: `count` tables of this size at `tables`, 'static.
    let entries: &'static [EnvTable] = unsafe { std::slice::from_raw_parts(tables.tables, tables.count as usize) };
    // SAFETY: a NUL-terminated string of the crate.
    let crate_version = unsafe { CStr::from_ptr(tables.version) }.to_string_lossy();
    entries
        .iter()
        .map(|table| {
            // SAFETY: NUL-terminated strings of the crate.
            let (id, spaces) = unsafe { (CStr::from_ptr(table.id), CStr::from_ptr(table.spaces)) };
            let id = id.to_str().map_err(|_| "an env id is not UTF-8".to_owned())?;
            let spaces = spaces.to_str().map_err(|_| format!("{id}: its spaces are not UTF-8"))?;
            let (observation, action, agents) = parse(spaces).map_err(|e| format!("{id}: its spaces: {e}"))?;
            let kind = EnvKind::multi_of(id, agents, observation, action, move |_| foreign(table))
                .map_err(|e| format!("{id}: {e}"))?;
            let binding = kind.binding();
            let (obs, act) = (binding.observation_layout(), binding.action_layout());
            let ours = (obs.row_bytes as u64, act.row_bytes as u64, fingerprint(obs, act));
            let theirs = (table.observation_row_bytes, table.action_row_bytes, table.layout_fingerprint);
            if ours != theirs || table.agents as usize != kind.agents().map_or(0, <[String]>::len) {
                return Err(format!(
                    "{id}: the crate (pufferrs-envs {crate_version}) was built for rows of {} and {} bytes \
                     (layout {:#018x}), but this pufferrs lays its spaces out in {} and {} bytes (layout {:#018x}): \
                     rebuild the crate against pufferrs-envs {}",
                    theirs.0,
                    theirs.1,
                    theirs.2,
                    ours.0,
                    ours.1,
                    ours.2,
                    env!("CARGO_PKG_VERSION")
                ));
            }
            Ok(kind)
        })
        .collect()
}

fn foreign(table: &'static EnvTable) -> pufferrs_core::error::Result<ForeignEnv> {
    let mut handle = std::ptr::null_mut();
    let mut buffer = [0u8; 1024];
    let mut error = ErrorOut { buffer: buffer.as_mut_ptr(), capacity: buffer.len(), length: 0 };
    // SAFETY: the table's own context, a place for the handle, our buffer.
    let code = unsafe { (table.make)(table.context, &mut handle, &mut error) };
    if code != 0 || handle.is_null() {
        let message = String::from_utf8_lossy(&buffer[..error.length.min(buffer.len())]).into_owned();
        return Err(pufferrs_core::error::Error::Buffers(format!("making an env of the crate failed: {message}")));
    }
    Ok(ForeignEnv { table, handle, status: Vec::new() })
}
