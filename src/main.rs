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
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
