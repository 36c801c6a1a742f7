//! hull-shim entry point.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match hull_shim::start::parse_action(&args) {
        Some(action) => {
            eprintln!("hull-shim: {action:?} is not available in this build");
            ExitCode::from(2)
        }
        None => {
            eprintln!("usage: hull-shim -namespace NS -id ID -address SOCK start|delete");
            ExitCode::from(2)
        }
    }
}
