// mimalloc instead of glibc's malloc: profiles of `up`, `plan` and the resolver spent a quarter
// of their CPU in malloc/free (many small, short-lived vectors and strings per resource), and
// mimalloc's thread-local free lists make those cheap.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    netcompose::cli::main()
}
