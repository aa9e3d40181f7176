//! `kaosctl`: manage KaOS hosts remotely. See `kaosctl --help` for the commands, the files and
//! the exit codes.

mod apps_args;
mod args;
mod group_cmds;
mod image_cmds;
mod local;
mod module_cmds;
mod net_args;
mod net_cmds;
mod remote;
mod vm_cmds;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory as _, FromArgMatches as _};
use kaosctl::ClientError;
use kaosctl::config::{ConfigDir, ConfigError};
use kaosctl::connect::{Error, Selection};

use crate::args::{Cli, Command, ModuleCmd, Output};

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match run(&cli, &matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kaosctl: {e}");
            if let Error::Client(ClientError::HostKeyChanged { endpoint, .. }) = &e
                && cli.global.endpoint.is_some()
            {
                eprintln!(
                    "kaosctl: to forget the pin: kaosctl context unpin --endpoint {endpoint}"
                );
            }
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cli: &Cli, matches: &ArgMatches) -> Result<(), Error> {
    let output = cli.global.output;
    if let Command::Completions { shell } = cli.command {
        return local::completions(shell);
    }
    if let Command::Module(ModuleCmd::Build { dir, out }) = &cli.command {
        return module_cmds::build(dir, out, output);
    }
    let dir = ConfigDir::from_env()?;
    let selection = || selection(cli, matches);
    match &cli.command {
        Command::Key(cmd) => local::key(cmd, &dir, selection, output),
        Command::Context(cmd) => {
            let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
            let add = local::AddFlags {
                endpoint: cli.global.endpoint.clone().filter(|_| given("endpoint")),
                key: cli.global.key.clone().filter(|_| given("key")),
            };
            local::context(cmd, &dir, add, selection, output)
        }
        command => remote::run(command, &dir, &selection()?, output),
    }
}

/// The connection flags. `--context` and `--endpoint` exclude each other; a flag overrides the
/// other's environment variable.
fn selection(cli: &Cli, matches: &ArgMatches) -> Result<Selection, ConfigError> {
    let g = &cli.global;
    let source = |id: &str| matches.value_source(id);
    let (mut context, mut endpoint) = (g.context.clone(), g.endpoint.clone());
    if context.is_some() && endpoint.is_some() {
        match (source("context"), source("endpoint")) {
            (Some(ValueSource::EnvVariable), Some(ValueSource::CommandLine)) => context = None,
            (Some(ValueSource::CommandLine), Some(ValueSource::EnvVariable)) => endpoint = None,
            (Some(ValueSource::EnvVariable), _) => {
                return Err(ConfigError::Usage(
                    "KAOS_CONTEXT and KAOS_ENDPOINT are both set; unset one".into(),
                ));
            }
            _ => {
                return Err(ConfigError::Usage(
                    "give --context or --endpoint, not both".into(),
                ));
            }
        }
    }
    Ok(Selection {
        context,
        endpoint,
        key: g.key.clone(),
        host_key: g.host_key,
        trust_new_host: g.trust_new_host,
        timeout: Duration::from_secs(g.timeout),
    })
}

/// Prints `view` as a table or as pretty JSON.
pub(crate) fn show<T: serde::Serialize>(
    output: Output,
    view: &T,
    table: impl Fn(&T) -> String,
) -> Result<(), Error> {
    match output {
        Output::Table => emit(&table(view)),
        Output::Json => emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(view).unwrap_or_else(|e| e.to_string())
        )),
    }
}

/// `view` as one line of JSON.
pub(crate) fn json_line<T: serde::Serialize>(view: &T) -> String {
    format!(
        "{}\n",
        serde_json::to_string(view).unwrap_or_else(|e| e.to_string())
    )
}

/// Writes `text` to stdout now (a follower sees each line as it comes). A reader that went
/// away (`| head`) ends the program quietly, as it would a C tool killed by SIGPIPE.
pub(crate) fn emit(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(source) => Err(ConfigError::Io {
            path: "standard output".into(),
            source,
        }
        .into()),
    }
}
