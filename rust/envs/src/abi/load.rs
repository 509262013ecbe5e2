//! The loading side of the ABI: what runs in pufferrs. Nothing of a table
//! is trusted before its version, its sizes and its layouts are checked.

use std::ffi::{CStr, c_void};

use pufferrs_core::layout::Space;

use super::{ABI_VERSION, EnvTable, EnvTables, ErrorOut, RowsC, fingerprint, status_byte, status_of};
use crate::env::{Actions, Agents, EnvKind, MultiAgentEnv};

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
