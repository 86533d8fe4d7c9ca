//! `palisade-probe`: the servers every test pod runs, and a client for poking at a cluster by hand.
//!
//! ```text
//! palisade-probe serve --name x/a --tcp 80 --tcp 81 --udp 80 --udp 81
//! palisade-probe connect --to 198.18.1.10 --tcp 80 [--timeout-ms 500]
//! ```
//! Run them inside a namespace with `ip netns exec <ns> palisade-probe ...`. `serve` prints
//! `listening` once every socket is bound (the testkit waits for that line). `connect` prints the
//! outcome and exits 0 only when connected.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

use palisade_testkit::probe::{DEFAULT_PROBE_TIMEOUT, Protocol, dual_stack_socket, probe_blocking};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("connect") => connect(&args[1..]),
        _ => Err(usage()),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("palisade-probe: {message}");
            ExitCode::from(2)
        }
    }
}

fn usage() -> String {
    "usage: palisade-probe serve --name NS/POD [--tcp PORT]... [--udp PORT]...\n       \
     palisade-probe connect --to IP (--tcp|--udp) PORT [--timeout-ms MS]"
        .to_string()
}

/// `(protocol, port)` pairs and the remaining `--flag value` pairs.
type ParsedArgs = (Vec<(Protocol, u16)>, Vec<(String, String)>);

fn parse(args: &[String]) -> Result<ParsedArgs, String> {
    let mut ports = Vec::new();
    let mut other = Vec::new();
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().ok_or_else(|| format!("{flag} needs a value\n{}", usage()))?;
        match flag.as_str() {
            "--tcp" | "--udp" => {
                let port = value.parse::<u16>().map_err(|e| format!("{flag} {value}: {e}"))?;
                let protocol = if flag == "--tcp" { Protocol::Tcp } else { Protocol::Udp };
                ports.push((protocol, port));
            }
            _ => other.push((flag.clone(), value.clone())),
        }
    }
    Ok((ports, other))
}

fn serve(args: &[String]) -> Result<ExitCode, String> {
    let (ports, other) = parse(args)?;
    let name = other
        .iter()
        .find(|(flag, _)| flag == "--name")
        .map(|(_, v)| v.clone())
        .ok_or_else(|| format!("serve needs --name\n{}", usage()))?;
    let mut threads = Vec::new();
    for (protocol, port) in ports {
        let socket = dual_stack_socket(protocol, port).map_err(|e| format!("bind {protocol}/{port}: {e}"))?;
        let identity = name.clone();
        threads.push(match protocol {
            Protocol::Tcp => std::thread::spawn(move || serve_tcp(TcpListener::from(socket), &identity)),
            Protocol::Udp => std::thread::spawn(move || serve_udp(UdpSocket::from(socket), &identity)),
        });
    }
    println!("listening");
    let _ = std::io::stdout().flush();
    for thread in threads {
        let _ = thread.join();
    }
    Ok(ExitCode::SUCCESS)
}

fn serve_tcp(listener: TcpListener, identity: &str) {
    let greeting = format!("{identity}\n");
    for stream in listener.incoming().flatten() {
        let greeting = greeting.clone();
        std::thread::spawn(move || {
            let mut stream = stream;
            let _ = stream.write_all(greeting.as_bytes());
            let _ = stream.shutdown(std::net::Shutdown::Write);
        });
    }
}

fn serve_udp(socket: UdpSocket, identity: &str) {
    let mut buffer = [0u8; 512];
    while let Ok((len, from)) = socket.recv_from(&mut buffer) {
        let reply = format!("{identity} {}", String::from_utf8_lossy(&buffer[..len]));
        let _ = socket.send_to(reply.as_bytes(), from);
    }
}

fn connect(args: &[String]) -> Result<ExitCode, String> {
    let (ports, other) = parse(args)?;
    let [(protocol, port)] = ports.as_slice() else {
        return Err(format!("connect needs exactly one --tcp or --udp port\n{}", usage()));
    };
    let mut to = None;
    let mut timeout = DEFAULT_PROBE_TIMEOUT;
    for (flag, value) in &other {
        match flag.as_str() {
            "--to" => to = Some(value.parse::<IpAddr>().map_err(|e| format!("--to {value}: {e}"))?),
            "--timeout-ms" => {
                timeout = Duration::from_millis(value.parse().map_err(|e| format!("--timeout-ms {value}: {e}"))?)
            }
            _ => return Err(format!("unknown flag {flag}\n{}", usage())),
        }
    }
    let to = to.ok_or_else(|| format!("connect needs --to\n{}", usage()))?;
    let outcome = probe_blocking(SocketAddr::new(to, *port), *protocol, timeout);
    println!("{protocol}/{port} {to}: {outcome}");
    Ok(if outcome.is_connected() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
