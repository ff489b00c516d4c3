fn main() -> std::process::ExitCode {
    netcompose::cli::main()
}
