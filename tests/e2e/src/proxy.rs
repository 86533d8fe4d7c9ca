//! A stand-in for the operator's Kubernetes Service: one TCP address in front of every operator
//! replica, handing each new connection to the next live replica in turn (kube-proxy spreads
//! connections too). TLS passes through untouched, so agents verify the operator's certificate.
//!
//! Agents take one operator address; without this, killing the replica an agent uses would
//! leave that agent with nobody to reconnect to, which is not what a cluster does.
//!
//! It can also blackhole: while [`ServiceProxy::set_blackholed`] is on, every byte either side
//! sends (on open connections and on new ones) is swallowed and the connections stay open, as
//! when a network path drops packets without a reset. Writes succeed; nothing arrives.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

pub struct ServiceProxy {
    address: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    blackholed: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

impl ServiceProxy {
    /// Listens on 127.0.0.1 (a free port) with no backends yet.
    pub async fn start() -> Result<ServiceProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| Error::io("bind the service proxy", e))?;
        let address = listener.local_addr().map_err(|e| Error::io("service proxy address", e))?;
        let backends: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        let next = Arc::new(AtomicUsize::new(0));
        let blackholed: Arc<AtomicBool> = Arc::default();
        let accept = tokio::spawn({
            let (backends, blackholed) = (backends.clone(), blackholed.clone());
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    let candidates = backends.lock().map(|b| b.clone()).unwrap_or_default();
                    let start = next.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(forward(inbound, candidates, start, blackholed.clone()));
                }
            }
        });
        Ok(ServiceProxy { address, backends, blackholed, accept })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Swallows (or again passes) every byte in both directions, keeping connections open.
    pub fn set_blackholed(&self, blackholed: bool) {
        self.blackholed.store(blackholed, Ordering::SeqCst);
    }

    /// Replaces the endpoints (what the EndpointSlice controller would do as replicas come and go).
    pub fn set_backends(&self, backends: Vec<SocketAddr>) {
        if let Ok(mut current) = self.backends.lock() {
            *current = backends;
        }
    }
}

impl Drop for ServiceProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Connects to the first backend that answers, starting at `start` (round robin), and copies
/// bytes both ways until either side closes. With no live backend the client sees a close.
async fn forward(inbound: TcpStream, backends: Vec<SocketAddr>, start: usize, blackholed: Arc<AtomicBool>) {
    for offset in 0..backends.len() {
        let backend = backends[(start + offset) % backends.len()];
        let connect = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(backend)).await;
        if let Ok(Ok(outbound)) = connect {
            let (inbound_read, inbound_write) = inbound.into_split();
            let (outbound_read, outbound_write) = outbound.into_split();
            // Either direction ending ends both, like a proxied connection closing.
            tokio::select! {
                _ = pass(inbound_read, outbound_write, blackholed.clone()) => {}
                _ = pass(outbound_read, inbound_write, blackholed) => {}
            }
            return;
        }
    }
}

/// Copies bytes from `from` to `to` until `from` closes, dropping them while blackholed. A close
/// while blackholed is swallowed too (its FIN would be dropped): the other side learns of it
/// only once the path heals.
async fn pass(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin, blackholed: Arc<AtomicBool>) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => {
                while blackholed.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                return;
            }
            Ok(read) => read,
        };
        if blackholed.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
