//! The TCP relay both userland proxies share: `-p` published ports ([`super::ports`]) and the
//! daemon's service addresses (`daemon::services::names`).
//!
//! One accept loop per listener; each accepted connection asks its [`Upstream`] where to go,
//! connects there (at most [`Limits::connect`]) and copies bytes both ways until either side
//! closes, or nothing moved for [`Limits::idle`]. At most [`Limits::connections`] connections
//! are served at once; the rest are closed on accept. What an upstream hands out with the
//! address (a guard) lives as long as the connection, so a caller can count connections in
//! flight. This module does not choose upstreams.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::debug;

/// Bytes read from one side before they are written to the other.
const CHUNK: usize = 16 * 1024;

/// Where a connection goes, chosen per connection.
pub trait Upstream: Send + Sync + 'static {
    /// Held for as long as the connection lasts.
    type Guard: Send + 'static;

    /// The address to connect to; `None` closes the client at once (nothing to serve it).
    fn pick(&self) -> Option<(SocketAddr, Self::Guard)>;
}

/// One fixed address, as a published port has.
impl Upstream for SocketAddr {
    type Guard = ();

    fn pick(&self) -> Option<(SocketAddr, ())> {
        Some((*self, ()))
    }
}

/// The bounds of one listener's relay.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; further ones are closed as they are accepted.
    pub connections: usize,
    /// How long connecting to the upstream may take before the client is closed.
    pub connect: Duration,
    /// How long a connection may carry nothing, either way, before both sides are closed.
    pub idle: Duration,
}

/// One listener's accept loop. Its connections live in a `JoinSet` owned by this task, so
/// aborting the task ends them too.
pub async fn serve(listener: TcpListener, upstream: impl Upstream, limits: Limits) {
    let upstream = Arc::new(upstream);
    let slots = Arc::new(Semaphore::new(limits.connections));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, peer)) = accepted else { continue };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    debug!(%peer, "too many connections; closing this one");
                    continue;
                };
                let upstream = Arc::clone(&upstream);
                connections.spawn(async move {
                    relay(client, upstream.as_ref(), limits).await;
                    drop(slot);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn relay(mut client: TcpStream, upstream: &impl Upstream, limits: Limits) {
    let Some((target, guard)) = upstream.pick() else {
        debug!("no upstream to relay to; closing the client");
        return;
    };
    let mut upstream = match tokio::time::timeout(limits.connect, TcpStream::connect(target)).await
    {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(error)) => {
            debug!(%target, %error, "cannot reach the upstream; closing the client");
            return;
        }
        Err(_) => {
            debug!(%target, "connecting to the upstream timed out; closing the client");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    if let Err(error) = pipe(&mut client, &mut upstream, limits.idle).await {
        debug!(%target, %error, "relayed connection ended");
    }
    drop(guard);
}

/// Copies both ways until both sides finished sending, or nothing moved for `idle`. A side
/// that finishes has its peer's write half shut down, so half-closed protocols still work.
async fn pipe(a: &mut TcpStream, b: &mut TcpStream, idle: Duration) -> io::Result<()> {
    let (mut a_read, mut a_write) = a.split();
    let (mut b_read, mut b_write) = b.split();
    let (mut from_a, mut from_b) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let (mut a_open, mut b_open) = (true, true);
    while a_open || b_open {
        let step = async {
            // Reads on a TCP stream are cancel-safe: the side that loses the race lost nothing.
            tokio::select! {
                read = a_read.read(&mut from_a), if a_open => match read? {
                    0 => { a_open = false; b_write.shutdown().await }
                    n => b_write.write_all(&from_a[..n]).await,
                },
                read = b_read.read(&mut from_b), if b_open => match read? {
                    0 => { b_open = false; a_write.shutdown().await }
                    n => a_write.write_all(&from_b[..n]).await,
                },
            }
        };
        tokio::time::timeout(idle, step)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "idle for too long"))??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts connections in flight, as the daemon's service addresses do.
    struct Counting(SocketAddr, Arc<AtomicUsize>);

    struct Held(Arc<AtomicUsize>);

    impl Drop for Held {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl Upstream for Counting {
        type Guard = Held;

        fn pick(&self) -> Option<(SocketAddr, Held)> {
            self.1.fetch_add(1, Ordering::SeqCst);
            Some((self.0, Held(Arc::clone(&self.1))))
        }
    }

    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        address
    }

    const LIMITS: Limits = Limits {
        connections: 4,
        connect: Duration::from_secs(5),
        idle: Duration::from_secs(30),
    };

    #[tokio::test]
    async fn bytes_go_both_ways_and_the_guard_lives_as_long_as_the_connection() {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front = listener.local_addr().unwrap();
        let upstream = Counting(echo().await, Arc::clone(&in_flight));
        let relay = tokio::spawn(serve(listener, upstream, LIMITS));

        let mut client = TcpStream::connect(front).await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut answer = [0u8; 4];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"ping");
        assert_eq!(in_flight.load(Ordering::SeqCst), 1);
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "the echo's half-close came through");
        drop(client);
        while in_flight.load(Ordering::SeqCst) != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        relay.abort();
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front = listener.local_addr().unwrap();
        let limits = Limits {
            idle: Duration::from_millis(50),
            ..LIMITS
        };
        let relay = tokio::spawn(serve(listener, echo().await, limits));
        let mut client = TcpStream::connect(front).await.unwrap();
        let mut rest = Vec::new();
        // Ends (EOF or reset) only because the relay gave up on the quiet connection.
        let _ = client.read_to_end(&mut rest).await;
        assert!(rest.is_empty());
        relay.abort();
    }
}
