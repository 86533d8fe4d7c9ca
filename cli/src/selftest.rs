//! `palisade selftest listen|connect`: the two ends of the chart's `helm test`, which checks
//! enforcement end to end with the one image: a server behind a NetworkPolicy, one client the
//! policy admits (it must connect) and one it does not (it must never connect).

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};

#[derive(Debug, Subcommand)]
pub enum SelftestCommand {
    /// Accept TCP connections on PORT (every address, both families) until stopped.
    Listen(ListenArgs),
    /// Connect to HOST:PORT and check the outcome the policy implies.
    Connect(ConnectArgs),
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// HOST:PORT; HOST may be a name, an IPv4 address or a bracketed IPv6 address.
    #[arg(long)]
    to: String,

    /// `open`: succeed once a connection opens within --seconds (a policy takes effect, and a
    /// server starts, within moments). `closed`: succeed only if no attempt opens for --seconds.
    #[arg(long, value_enum)]
    expect: Expect,

    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Expect {
    Open,
    Closed,
}

const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
const PAUSE: Duration = Duration::from_millis(250);

pub fn run(command: SelftestCommand) -> anyhow::Result<()> {
    match command {
        SelftestCommand::Listen(args) => listen(args.port),
        SelftestCommand::Connect(args) => connect(&args.to, args.expect, Duration::from_secs(args.seconds)),
    }
}

fn listen(port: u16) -> anyhow::Result<()> {
    // `[::]` takes IPv4 too on Linux (bindv6only is 0 by default); fall back to IPv4 alone.
    let listener = TcpListener::bind(("::", port))
        .or_else(|_| TcpListener::bind(("0.0.0.0", port)))
        .with_context(|| format!("cannot listen on port {port}"))?;
    println!("listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        // Accepting is the whole answer; the connection closes when dropped.
        drop(stream);
    }
    Ok(())
}

fn connect(to: &str, expect: Expect, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let opened = addresses(to)?.iter().any(|address| TcpStream::connect_timeout(address, ATTEMPT_TIMEOUT).is_ok());
        match (expect, opened) {
            (Expect::Open, true) => {
                println!("{to}: open after {attempts} attempts, as expected");
                return Ok(());
            }
            (Expect::Closed, true) => {
                bail!("{to}: a connection opened on attempt {attempts}, but the policy denies it")
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            return match expect {
                Expect::Open => bail!("{to}: no connection opened in {} s ({attempts} attempts)", within.as_secs()),
                Expect::Closed => {
                    println!("{to}: closed for {} s ({attempts} attempts), as expected", within.as_secs());
                    Ok(())
                }
            };
        }
        std::thread::sleep(PAUSE);
    }
}

fn addresses(to: &str) -> anyhow::Result<Vec<SocketAddr>> {
    let resolved: Vec<SocketAddr> =
        to.to_socket_addrs().with_context(|| format!("--to {to:?} is not HOST:PORT or does not resolve"))?.collect();
    if resolved.is_empty() {
        bail!("--to {to:?} resolves to no address");
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_and_closed_are_judged_by_real_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let open = listener.local_addr().expect("address").to_string();
        std::thread::spawn(move || for _ in listener.incoming() {});
        assert!(connect(&open, Expect::Open, Duration::from_secs(5)).is_ok());
        assert!(connect(&open, Expect::Closed, Duration::from_secs(1)).is_err());
        // A port nothing listens on: refused at once, every time.
        let unused = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").to_string();
        assert!(connect(&unused, Expect::Closed, Duration::from_secs(1)).is_ok());
        assert!(connect(&unused, Expect::Open, Duration::from_secs(1)).is_err());
        assert!(connect("no-port", Expect::Open, Duration::from_secs(1)).is_err());
    }
}
