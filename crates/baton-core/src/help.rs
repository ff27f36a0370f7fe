//! What `--help` says of settings whose values are secret (URLs with passwords, keys, tokens).

use std::ffi::OsStr;

/// `command` with every argument whose environment value `--help` hides (clap's
/// `hide_env_values`) marked as set when `is_set` says its variable is: an operator sees that
/// `DATABASE_URL` reached the process, never what it holds.
pub fn mark_secrets_set(command: clap::Command, is_set: impl Fn(&OsStr) -> bool) -> clap::Command {
    let set: Vec<clap::Id> = command
        .get_arguments()
        .filter(|arg| arg.is_hide_env_values_set())
        .filter(|arg| arg.get_env().is_some_and(&is_set))
        .map(|arg| arg.get_id().clone())
        .collect();
    set.into_iter().fold(command, |command, id| {
        command.mut_arg(id, |arg| {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            arg.help(format!("{help} [set; value hidden]"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hidden_setting_that_is_set_says_so_and_others_do_not() {
        let command = clap::Command::new("x")
            .arg(
                clap::Arg::new("url")
                    .long("url")
                    .env("SOME_URL")
                    .hide_env_values(true)
                    .help("Where."),
            )
            .arg(
                clap::Arg::new("key")
                    .long("key")
                    .env("SOME_KEY")
                    .hide_env_values(true)
                    .help("Key."),
            )
            .arg(
                clap::Arg::new("plain")
                    .long("plain")
                    .env("SOME_URL")
                    .help("Plain."),
            );
        let mut command = mark_secrets_set(command, |name| name == "SOME_URL");
        let help = command.render_help().to_string();
        assert!(help.contains("Where. [set; value hidden]"), "{help}");
        assert!(help.contains("Key. [env: SOME_KEY]"), "{help}");
        assert!(!help.contains("Plain. [set"), "{help}");
    }
}
