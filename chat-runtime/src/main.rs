//! `chat-runtime`: serves chat for the tenants of a YAML configuration file.

fn main() -> std::process::ExitCode {
    chat_runtime::cli::main()
}
