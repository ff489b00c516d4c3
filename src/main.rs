// mimalloc instead of glibc's malloc: profiles of `up`, `plan` and the resolver spent a quarter
// of their CPU in malloc/free (many small, short-lived vectors and strings per resource), and
// mimalloc's thread-local free lists make those cheap. Built without its transparent huge
// pages (feature no_thp): it asked for them on every arena, so the first touch of each 2 MiB
// region zeroed the whole of it, and the many blocking threads of an `up` each touch fresh
// regions: a fifth of the CPU of an `up` with VIPs went to clear_page_erms.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    netcompose::cli::main()
}
