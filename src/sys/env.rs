//! This process's environment as libc holds it, read without copying.
//!
//! A spawn that inherits the environment hands the child libc's own `KEY=VALUE` strings
//! instead of copies: copying every variable into a fresh C string (what `std::env::vars_os`
//! and a rebuilt block cost) was about 10 µs of each spawn, before the clone, where every
//! µs is the caller's. `std::process` passes the same strings for the same reason.

use std::ffi::{CStr, c_char};

unsafe extern "C" {
    /// libc's `environ`: a NULL-terminated array of `KEY=VALUE` C strings.
    static environ: *const *const c_char;
}

/// Every entry of the environment, in libc's order.
///
/// The strings are libc's and live until the environment is changed. Changing it while
/// another thread reads it (a spawn reads it until the child's `execve` has copied it) is
/// what makes `std::env::set_var` `unsafe`; this reads it as `std::env::var_os` does.
pub(crate) fn entries() -> Vec<&'static CStr> {
    let mut entries = Vec::with_capacity(64);
    // SAFETY: `environ` is NULL or a NULL-terminated array of valid C strings, which is not
    // changed concurrently (see above); each entry is read before the next.
    unsafe {
        let mut entry = environ;
        if entry.is_null() {
            return entries;
        }
        while !(*entry).is_null() {
            entries.push(CStr::from_ptr(*entry));
            entry = entry.add(1);
        }
    }
    entries
}
