// mimalloc instead of glibc's malloc: profiles of `up`, `plan` and the resolver spent a quarter
// of their CPU in malloc/free (many small, short-lived vectors and strings per resource), and
// mimalloc's thread-local free lists make those cheap. Built without its transparent huge
// pages (feature no_thp): it asked for them on every arena, so the first touch of each 2 MiB
// region zeroed the whole of it, and the many blocking threads of an `up` each touch fresh
// regions: a fifth of the CPU of an `up` with VIPs went to clear_page_erms.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let code = netcompose::cli::main();
    if code == ExitCode::SUCCESS {
        // All that is left at a normal exit is mimalloc's handler, which hands every free page
        // back to the OS, one madvise per range (two hundred after an `up` of 200 replicas,
        // 3 ms of a 60 ms run), just before the OS takes the whole address space back.
        let _ = std::io::stdout().flush();
        // SAFETY: _exit only ends the process; stdout is flushed and stderr is unbuffered.
        unsafe { libc::_exit(0) }
    }
    code
}
