//! The `warren` binary: parses the command line and hands over to [`warren::cli`].

fn main() -> std::process::ExitCode {
    warren::cli::main()
}
