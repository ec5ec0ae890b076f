//! The `safetensorize` command line: parse, run, print `{err:#}`, exit with a documented code.

mod cli;

// A checkpoint of many small tensors makes millions of short-lived allocations while it is
// unpickled; glibc's allocator spent about a third of such a conversion's time in malloc, free
// and consolidation (perf, 100,000 tensors). mimalloc took that run from about 1.6 s
// to 1.1 s on a 2-core VM. It is built without transparent huge pages: with them every thread
// (the archive reader, the writer's pool) faulted in 2 MiB pages of its own, and 10,000 small
// tensors peaked at 61-69 MiB instead of 27 MiB, for 6-12% less time. It is mimalloc's v2
// line: v3 holds freed memory for a second before returning it (v2: 10 ms), so what the zip
// reader's thread and the unpickled tree had freed stayed resident while the write allocated
// anew: 100,000 tensors of 256 B peaked at 126-133 MiB with v3 and 96-104 MiB with v2, in the
// same time (the million-tensor case: 1.07 GiB against 1.14 GiB). The library leaves the
// choice of allocator to its users.
//
// The `mimalloc` crate's own `GlobalAlloc` sends every request through mimalloc's aligned
// entry points, which cost more than the allocation itself on this workload (callgrind,
// 100,000 tensors: 150 M of 2.26 G instructions in the alloc shim, 28 M in the page
// allocator). mimalloc's plain entry points return memory aligned to at least 8 bytes, so
// requests of that alignment (nearly all) take them; the rest keep the aligned ones.
struct Allocator;

const PLAIN_ALIGN: usize = std::mem::size_of::<usize>();

/// Whether mimalloc's plain entry points' guaranteed alignment is enough for `layout`.
#[inline]
fn plain(layout: std::alloc::Layout) -> bool {
    layout.align() <= PLAIN_ALIGN
}

// SAFETY: every block comes from mimalloc and goes back to it: `mi_free` frees blocks of the
// plain and the aligned entry points alike, and the plain ones are used only when their
// guaranteed alignment (8 bytes) is enough for the layout.
unsafe impl std::alloc::GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: mimalloc accepts any size; the plain entry point only when its alignment
        // suffices, the aligned one with the layout's alignment otherwise.
        unsafe {
            if plain(layout) {
                libmimalloc_sys::mi_malloc(layout.size()) as *mut u8
            } else {
                libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(layout) {
                libmimalloc_sys::mi_zalloc(layout.size()) as *mut u8
            } else {
                libmimalloc_sys::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from this allocator, hence from mimalloc.
        unsafe { libmimalloc_sys::mi_free(ptr as *mut std::ffi::c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        let p = ptr as *mut std::ffi::c_void;
        // SAFETY: `ptr` came from this allocator with `layout`; the alignment rule is `alloc`'s.
        unsafe {
            if plain(layout) {
                libmimalloc_sys::mi_realloc(p, new_size) as *mut u8
            } else {
                libmimalloc_sys::mi_realloc_aligned(p, new_size, layout.align()) as *mut u8
            }
        }
    }
}

#[global_allocator]
static GLOBAL: Allocator = Allocator;

/// Returns to the system what mimalloc holds freed but not yet purged (it waits 10 ms after a
/// free, longer for whole segments, and the threads that freed it may have exited). Called
/// between phases whose working sets differ, so the next one does not peak on top of the last.
pub(crate) fn release_freed_memory() {
    // SAFETY: `mi_collect` only walks mimalloc's own structures; any thread may call it.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

fn main() -> std::process::ExitCode {
    cli::main()
}
