//! The shim's command line, as containerd's shim start protocol passes it.

/// Subcommands a daemon invokes a shim with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Daemonise, listen, print the socket address.
    Start,
    /// Clean up after a dead shim.
    Delete,
    /// Serve in the foreground (the daemonised child).
    Serve,
}

/// Picks the action from the trailing positional argument.
pub fn parse_action(args: &[String]) -> Option<Action> {
    match args.iter().rev().find(|a| !a.starts_with('-'))?.as_str() {
        "start" => Some(Action::Start),
        "delete" => Some(Action::Delete),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_action_after_flags() {
        let args: Vec<String> = ["-namespace", "default", "-id", "c1", "start"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(parse_action(&args), Some(Action::Start));
        assert_eq!(parse_action(&[]), None);
    }
}
