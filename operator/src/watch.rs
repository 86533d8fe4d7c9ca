//! Following the API server through outages: one place that turns a `kube::runtime` watcher
//! into an endless stream of events, with the retry policy the operator needs.
//!
//! - A 410 Gone (`Expired`: the resource version is older than the server's window, as after an
//!   API server or etcd restart) opens a fresh watcher at once: list, then watch from the list's
//!   version. No backoff on that path, and never a retry of the expired version (a failed
//!   watch start keeps it inside `kube::runtime::watcher`, which can loop on it).
//! - Any other error is retried after an exponential delay from [`RETRY_INITIAL`] to
//!   [`RETRY_MAX`], reset by the next event: an outage costs each watcher at most one request a
//!   second, and recovery is at most a second behind the server.
//! - One log line per change of state: the first failure at WARN, repeats at DEBUG, and the
//!   recovery at INFO with how many attempts failed.

use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::watcher::{self, Event};
use palisade_protocol::Backoff;

pub const RETRY_INITIAL: Duration = Duration::from_millis(100);
pub const RETRY_MAX: Duration = Duration::from_secs(1);

/// Whether the error says the watched resource version expired (HTTP 410 Gone).
pub fn is_gone(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

struct Following<S> {
    what: &'static str,
    events: S,
    backoff: Backoff,
    failures: u32,
}

/// Events of the watcher `open` makes, forever: errors are handled here (see the module docs) and
/// never reach the caller. `open` is called again for a fresh list after a 410.
pub fn follow<K, S>(what: &'static str, open: impl Fn() -> S + Send + 'static) -> impl Stream<Item = Event<K>> + Send
where
    K: Send + 'static,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + Unpin + 'static,
{
    let state = Following { what, events: open(), backoff: Backoff::new(RETRY_INITIAL, RETRY_MAX), failures: 0 };
    futures::stream::unfold((state, open), |(mut state, open)| async move {
        loop {
            match state.events.next().await {
                Some(Ok(event)) => {
                    if !matches!(event, Event::Init) {
                        if state.failures > 0 {
                            tracing::info!(what = state.what, failed_attempts = state.failures, "watch recovered");
                        }
                        state.failures = 0;
                        state.backoff.reset();
                    }
                    return Some((event, (state, open)));
                }
                Some(Err(error)) if is_gone(&error) => {
                    tracing::info!(what = state.what, %error, "resource version expired; listing afresh");
                    state.events = open();
                }
                Some(Err(error)) => {
                    state.failures += 1;
                    let delay = state.backoff.next_delay();
                    if state.failures == 1 {
                        tracing::warn!(what = state.what, %error, "watch failed; retrying (at most every {RETRY_MAX:?}) until it recovers");
                    } else {
                        tracing::debug!(what = state.what, %error, attempt = state.failures, "watch still failing");
                    }
                    tokio::time::sleep(delay).await;
                }
                // A watcher never ends; if one did, start over rather than stop following.
                None => state.events = open(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_410_counts_as_gone() {
        let status = |code: u16| kube::core::Status { code, ..kube::core::Status::default() };
        assert!(is_gone(&watcher::Error::WatchError(Box::new(status(410)))));
        assert!(is_gone(&watcher::Error::WatchStartFailed(kube::Error::Api(Box::new(status(410))))));
        assert!(!is_gone(&watcher::Error::WatchError(Box::new(status(500)))));
        assert!(!is_gone(&watcher::Error::NoResourceVersion));
    }
}
