//! The loop that answers one namespace's UDP queries on 127.0.0.11:53.
//!
//! One task per namespace, never one per query: woken when queries are queued, it reads them
//! in batches ([`mmsg`]), answers each from the records it holds ([`Reader`]: an atomic load
//! per batch, no lock) into the batch's reply buffers, and sends all replies with one system
//! call. Only a query for a name the project does not know gets a task of its own, since it
//! waits on an upstream.

use super::answer::{self, Action, Transport};
use super::forward;
use super::mmsg::{self, Batch};
use super::server::{routes, Current, Reader, Space};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Bytes read of one query: our advertised EDNS buffer size.
const SLOT: usize = answer::EDNS_PAYLOAD as usize;

pub(super) async fn serve(sock: Arc<UdpSocket>, space: Arc<Space>, cur: Arc<Current>) {
    let mut records = cur.reader();
    loop {
        if sock.readable().await.is_err() {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        let mut batch = mmsg::take(SLOT);
        drain(&sock, &space, &mut records, &mut batch).await;
        mmsg::give(batch);
    }
}

/// Answer batches until the socket's queue is empty.
async fn drain(sock: &Arc<UdpSocket>, space: &Arc<Space>, records: &mut Reader, batch: &mut Batch) {
    let fd = sock.as_raw_fd();
    loop {
        let n = match sock.try_io(Interest::READABLE, || batch.recv(fd)) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(1)).await;
                return;
            }
        };
        answer_all(sock, space, records, batch);
        let mut next = 0;
        while next < n {
            match sock.try_io(Interest::WRITABLE, || batch.send(fd, &mut next)) {
                Ok(()) => break,
                Err(_) => {
                    if sock.writable().await.is_err() {
                        break;
                    }
                }
            }
        }
        // Read again until the queue is empty rather than go back to the reactor: a client
        // usually asks again as soon as it has a reply, so the next queries are often queued
        // by now. Let other namespaces' tasks run if this one has had its share.
        tokio::task::consume_budget().await;
    }
}

/// Answer every query of the batch into its reply buffer; forwarded queries get a task that
/// sends their reply itself.
fn answer_all(sock: &Arc<UdpSocket>, space: &Arc<Space>, records: &mut Reader, batch: &mut Batch) {
    let snap = records.get();
    let view = snap.namespaces.get(&space.name);
    let mut answered = 0;
    for i in 0..batch.len() {
        let peer = batch.peer(i);
        let (query, reply) = batch.query(i);
        match answer::respond(snap, view, query, Transport::Udp, reply) {
            Action::Reply => answered += 1,
            Action::Drop => {}
            Action::Forward => {
                let Ok(permit) = space.forwards.clone().try_acquire_owned() else {
                    *reply = answer::servfail(query);
                    space.counters.add_forwarded(None);
                    continue;
                };
                let ups = view
                    .map(|v| routes(space, &v.upstreams))
                    .unwrap_or_default();
                let query = query.to_vec();
                let sock = sock.clone();
                let counters = space.counters.clone();
                tokio::spawn(async move {
                    let r = forward::forward(&query, &ups, false).await;
                    counters.add_forwarded(Some(&r));
                    let _ = sock.send_to(&r, peer).await;
                    drop(permit);
                });
            }
        }
    }
    space.counters.add_answered(answered);
}
