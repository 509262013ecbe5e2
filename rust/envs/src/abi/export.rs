//! The exporting side of the ABI: what runs in the crate of envs. Its
//! functions catch every panic and report it in the caller's buffer.

use std::ffi::{CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::{
    ABI_VERSION, EnvTable, EnvTables, ErrorOut, RowsC, fingerprint, json_string, space_json, status_byte, status_of,
};
use crate::env::{Actions, Agents, EnvKind, MultiAgentEnv};

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
