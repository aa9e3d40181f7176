//! `kaosctl`: manage KaOS hosts remotely.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use kaos_protocol::{EventsQuery, HostSet, StoreInit, truncated};
use kaos_protocol::{Request, Response};
use kaosctl::view::{EventView, HostView, StatusView, StoreView, events_table};
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
    /// The configuration store and the host's disks.
    #[command(subcommand)]
    Store(StoreCmd),
    /// Persisted host settings.
    #[command(subcommand)]
    Host(HostCmd),
    /// The host's event log, oldest first.
    Events {
        /// Only events after this sequence number.
        #[arg(long)]
        after: Option<u64>,
        /// At most this many (fetched in pages).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
enum StoreCmd {
    /// Mode (disk, memory, degraded and why), location, and every disk with what is on it.
    Status,
    /// Initialise DEVICE (e.g. vdb) as the store and adopt it. A disk holding any data is
    /// refused unless --force.
    Init {
        /// Disk name from `store status`, or a /dev path.
        device: String,
        /// Overwrite whatever the disk holds.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum HostCmd {
    /// Show the host name and every persisted setting.
    Get,
    /// Persist a setting and put it in effect, e.g. `host set hostname rack4-node2`.
    Set {
        /// Setting name (hostname).
        key: String,
        /// Value.
        value: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kaosctl: {e}");
            match e {
                ClientError::Usage(_) => ExitCode::from(2),
                ClientError::Resolve(_)
                | ClientError::Connect { .. }
                | ClientError::Io { .. }
                | ClientError::Closed(_) => ExitCode::from(3),
                _ => ExitCode::from(1),
            }
        }
    }
}

/// Prints `view` as a table or as JSON.
fn show<T: serde::Serialize>(
    cli: &Cli,
    view: &T,
    table: impl Fn(&T) -> String,
) -> Result<(), ClientError> {
    match cli.output {
        Output::Table => print!("{}", table(view)),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(view).unwrap_or_else(|e| e.to_string())
        ),
    }
    Ok(())
}

/// An argument that must fit the protocol's bounded string.
fn bounded<const N: usize>(s: &str) -> Result<heapless::String<N>, ClientError> {
    let b = truncated::<N>(s);
    if b.len() != s.len() {
        return Err(ClientError::Usage(format!(
            "{s:?} is longer than {N} bytes"
        )));
    }
    Ok(b)
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
        Command::Store(StoreCmd::Status) => match client.request(Request::StoreStatus)? {
            Response::StoreStatus(r) => show(cli, &StoreView::from(&r), StoreView::table),
            other => Err(client.unexpected(&other)),
        },
        Command::Store(StoreCmd::Init { ref device, force }) => {
            let request = Request::StoreInit(StoreInit {
                device: bounded(device)?,
                force,
            });
            match client.request(request)? {
                Response::StoreStatus(r) => show(cli, &StoreView::from(&r), StoreView::table),
                other => Err(client.unexpected(&other)),
            }
        }
        Command::Host(HostCmd::Get) => match client.request(Request::HostGet)? {
            Response::Host(h) => show(cli, &HostView::from(&h), HostView::table),
            other => Err(client.unexpected(&other)),
        },
        Command::Host(HostCmd::Set { ref key, ref value }) => {
            let request = Request::HostSet(HostSet {
                key: bounded(key)?,
                value: bounded(value)?,
            });
            match client.request(request)? {
                Response::Host(h) => show(cli, &HostView::from(&h), HostView::table),
                other => Err(client.unexpected(&other)),
            }
        }
        Command::Events { after, limit } => {
            let mut events = Vec::new();
            let mut after = after;
            while events.len() < limit {
                let page =
                    u16::try_from((limit - events.len()).min(kaos_protocol::EVENTS_PER_PAGE))
                        .unwrap_or(1);
                let Response::Events(p) =
                    client.request(Request::Events(EventsQuery { after, limit: page }))?
                else {
                    return Err(ClientError::Protocol {
                        endpoint: cli.endpoint.clone(),
                        reason: "unexpected response to events".into(),
                    });
                };
                after = p.events.last().map(|e| e.seq).or(after);
                events.extend(p.events.iter().map(EventView::from));
                if !p.more || p.events.is_empty() {
                    break;
                }
            }
            show(cli, &events, |e: &Vec<EventView>| events_table(e))
        }
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
