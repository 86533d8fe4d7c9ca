//! A stand-in for the operator's Kubernetes Service: one TCP address in front of every operator
//! replica, handing each new connection to the next live replica in turn (kube-proxy spreads
//! connections too). TLS passes through untouched, so agents verify the operator's certificate.
//!
//! Agents take one operator address; without this, killing the replica an agent uses would
//! leave that agent with nobody to reconnect to, which is not what a cluster does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

pub struct ServiceProxy {
    address: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    accept: JoinHandle<()>,
}

impl ServiceProxy {
    /// Listens on 127.0.0.1 (a free port) with no backends yet.
    pub async fn start() -> Result<ServiceProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| Error::io("bind the service proxy", e))?;
        let address = listener.local_addr().map_err(|e| Error::io("service proxy address", e))?;
        let backends: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        let next = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn({
            let backends = backends.clone();
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    let candidates = backends.lock().map(|b| b.clone()).unwrap_or_default();
                    let start = next.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(forward(inbound, candidates, start));
                }
            }
        });
        Ok(ServiceProxy { address, backends, accept })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
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
async fn forward(mut inbound: TcpStream, backends: Vec<SocketAddr>, start: usize) {
    for offset in 0..backends.len() {
        let backend = backends[(start + offset) % backends.len()];
        let connect = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(backend)).await;
        if let Ok(Ok(mut outbound)) = connect {
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            return;
        }
    }
}
