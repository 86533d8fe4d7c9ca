//! One long-lived thread that spawns every child process of the testkit.
//!
//! Children get `PR_SET_PDEATHSIG`, which fires when the *thread* that forked them exits. Spawning
//! from a tokio worker or a blocking-pool thread would kill a probe server or apiserver the moment
//! that thread is retired; spawning from this thread, which lives as long as the process, ties the
//! children's lifetime to the test process instead.

use std::sync::OnceLock;
use std::sync::mpsc::{Sender, channel};

type Job = Box<dyn FnOnce() + Send>;

static KEEPER: OnceLock<Option<Sender<Job>>> = OnceLock::new();

/// Runs `job` on the keeper thread and returns its result (blocking briefly; a spawn takes ~1 ms).
pub(crate) fn on_keeper<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> T {
    let keeper = KEEPER.get_or_init(|| {
        let (sender, receiver) = channel::<Job>();
        std::thread::Builder::new()
            .name("palisade-process-keeper".into())
            .spawn(move || {
                for job in receiver {
                    job();
                }
                // Unreachable in practice: the sender lives in a static.
                loop {
                    std::thread::park();
                }
            })
            .ok()
            .map(|_| sender)
    });
    let (result_sender, result_receiver) = channel();
    let job: Job = Box::new(move || {
        let _ = result_sender.send(job());
    });
    match keeper {
        Some(sender) => match sender.send(job) {
            Ok(()) => result_receiver.recv().expect("palisade-process-keeper thread died"),
            Err(returned) => run_here(returned.0, result_receiver),
        },
        // No thread could be created: fall back to the current thread (weaker PDEATHSIG guarantee).
        None => run_here(job, result_receiver),
    }
}

fn run_here<T>(job: Job, receiver: std::sync::mpsc::Receiver<T>) -> T {
    job();
    receiver.recv().expect("job result")
}
