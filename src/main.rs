//! The `warren` binary: parses the command line and hands over to `warren::run_cli`.

fn main() -> std::process::ExitCode {
    warren::run_cli()
}
