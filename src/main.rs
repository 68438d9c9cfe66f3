fn main() -> std::process::ExitCode {
    lfeval::main()
}
