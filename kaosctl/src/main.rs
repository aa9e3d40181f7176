//! `kaosctl`: manage KaOS hosts remotely.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use kaos_protocol::{Request, Response};
use kaosctl::view::StatusView;
use kaosctl::{Client, ClientError};

/// Manage a KaOS host over its management port.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Exit codes: 0 success, 1 the host refused or answered wrongly, \
                  2 usage error, 3 host unreachable or connection lost."
)]
struct Cli {
    /// Host management endpoint, HOST:PORT.
    #[arg(
        long,
        short,
        global = true,
        env = "KAOS_ENDPOINT",
        default_value = "127.0.0.1:1289"
    )]
    endpoint: String,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Seconds to wait for the connection and for each reply.
    #[arg(long, global = true, default_value_t = 10)]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show host status: name, version, uptime, boot timeline, processes, management link.
    Status,
    /// Reboot the host (orderly).
    Reboot,
    /// Power the host off (orderly).
    Shutdown,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kaosctl: {e}");
            match e {
                ClientError::Resolve(_)
                | ClientError::Connect { .. }
                | ClientError::Io { .. }
                | ClientError::Closed(_) => ExitCode::from(3),
                _ => ExitCode::from(1),
            }
        }
    }
}

fn run(cli: &Cli) -> Result<(), ClientError> {
    let mut client = Client::connect(&cli.endpoint, Duration::from_secs(cli.timeout))?;
    match cli.command {
        Command::Status => match client.request(Request::Status)? {
            Response::Status(status) => {
                let view = StatusView::from(&status);
                match cli.output {
                    Output::Table => print!("{}", view.table()),
                    Output::Json => println!(
                        "{}",
                        serde_json::to_string_pretty(&view).unwrap_or_else(|e| e.to_string())
                    ),
                }
                Ok(())
            }
            other => Err(client.unexpected(&other)),
        },
        Command::Reboot | Command::Shutdown => {
            let (request, verb) = match cli.command {
                Command::Reboot => (Request::Reboot, "rebooting"),
                _ => (Request::Shutdown, "shutting down"),
            };
            match client.request(request)? {
                Response::Accepted => {
                    let host = client.server().hostname.to_string();
                    match cli.output {
                        Output::Table => println!("{host}: {verb}"),
                        Output::Json => println!(
                            "{}",
                            serde_json::json!({ "host": host, "accepted": true, "action": verb })
                        ),
                    }
                    Ok(())
                }
                other => Err(client.unexpected(&other)),
            }
        }
    }
}
