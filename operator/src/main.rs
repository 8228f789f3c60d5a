//! `parley-operator`: see [`parley_operator::cli`] for the subcommands.

fn main() -> std::process::ExitCode {
    parley_operator::cli::main()
}
