//! `netcompose version` and `netcompose completion SHELL`: what is installed, and the shell
//! completions clap derives from the command line itself.

use clap::CommandFactory;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct VersionArgs {
    /// Print the version number only.
    #[arg(long)]
    pub short: bool,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  netcompose completion bash > /etc/bash_completion.d/netcompose\n  netcompose completion zsh > \"${fpath[1]}/_netcompose\"\n  netcompose completion fish > ~/.config/fish/completions/netcompose.fish"
)]
pub struct CompletionArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

pub fn version(args: &VersionArgs) -> ExitCode {
    println!("{}", text(args.short));
    ExitCode::SUCCESS
}

fn text(short: bool) -> String {
    let v = env!("CARGO_PKG_VERSION");
    if short {
        v.to_string()
    } else {
        format!("netcompose version {v}")
    }
}

pub fn completion(args: &CompletionArgs) -> ExitCode {
    print!("{}", script(args.shell));
    ExitCode::SUCCESS
}

fn script(shell: Shell) -> String {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    // clap_complete offers hidden commands too: complete a copy without them (the daemon is
    // started by `up`, never typed).
    let full = super::Cli::command();
    let mut visible = clap::Command::new("netcompose")
        .version(env!("CARGO_PKG_VERSION"))
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|c| !c.is_hide_set()).cloned());
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut visible, "netcompose", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(text(true), env!("CARGO_PKG_VERSION"));
        assert_eq!(
            text(false),
            format!("netcompose version {}", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn completions_name_the_commands_and_hide_the_daemon() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let s = script(shell);
            for word in ["up", "down", "ls", "port", "scale", "dry-run", "completion"] {
                assert!(s.contains(word), "{shell:?} lacks {word}");
            }
            assert!(!s.contains("daemon"), "{shell:?} offers the hidden daemon");
        }
    }
}
