//! Handing freed heap memory back to the system.
//!
//! glibc's allocator keeps freed pages that sit below live allocations for ever: after a burst of
//! short-lived allocations (parsing a large rules file), the process stays as large as the burst's peak.
//! [`give_back`] returns those pages. It does nothing with other allocators or systems.

/// Return the allocator's free pages to the system; how long it takes grows with the heap (milliseconds at
/// most), so call it after a burst, not per request.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists and releases pages no allocation uses.
    unsafe {
        libc::malloc_trim(0);
    }
}
