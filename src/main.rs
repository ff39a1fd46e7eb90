//! The `tollgate` command: parse the command line, run the command (`tollgate::cli::dispatch`), print its error once
//! and set the exit code.

use std::process::ExitCode;

use clap::Parser as _;

use tollgate::cli;

fn main() -> ExitCode {
    // Run through a link named docker-credential-tollgate: the credential helper protocol, nothing else.
    if let Some(action) = cli::client::credhelper::link_action() {
        // Clients read the answer from stdout, the error included.
        return exit(cli::client::credhelper::run(&action), |message| println!("{message}"));
    }
    exit(cli::dispatch::run(cli::args::Cli::parse()), |message| eprintln!("tollgate: {message}"))
}

/// The exit code of a command's result, its error reported once by `report`.
fn exit(result: Result<(), String>, report: impl FnOnce(&str)) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            report(&message);
            ExitCode::FAILURE
        }
    }
}
