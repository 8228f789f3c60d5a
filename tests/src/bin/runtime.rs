//! The `chat-runtime` command, built inside this package for the tests.

fn main() -> std::process::ExitCode {
    chat_runtime::cli::main()
}
