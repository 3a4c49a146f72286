fn main() -> std::process::ExitCode {
    danube::cli::main()
}
