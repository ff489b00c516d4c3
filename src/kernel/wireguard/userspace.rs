//! Userspace WireGuard on a TUN device, inside this process: the engine of hosts whose kernel
//! has no WireGuard.
//!
//! The protocol is mullvad's gotatun (MPL-2.0, used unmodified as a dependency, which the MPL
//! allows in an Apache-2.0 project; its code before 2026-03-05 is boringtun's, BSD-3-Clause).
//! Chosen over boringtun because it was the fastest userspace WireGuard measured on this kind of
//! host (0.6–0.8 Gbit/s against 0.4 for boringtun and wireguard-go, one TCP stream), it batches
//! UDP (`sendmmsg`/`recvmmsg`, GRO), and it is configured through a typed API with no UAPI
//! socket: a UAPI socket is a path shared by every namespace, so two engines in two namespaces
//! of one machine would collide on it.
//!
//! Threads and namespaces: a namespace belongs to a thread, and the TUN device and the UDP
//! sockets are made in the namespace of the thread that makes them. [`UserspaceTunnel::open`]
//! builds a private tokio runtime whose threads all enter the calling thread's namespace when
//! they start, and every kernel step (TUN, sockets, rtnetlink) runs on that runtime; the
//! caller's thread only waits. So the agent (std threads) and tests (two engines in two
//! namespaces of one process) can open and drive engines from any thread, and no shared tokio
//! worker ever changes namespace.
//!
//! The device lives as long as the value: dropping it stops WireGuard, closes the TUN file (the
//! kernel then removes the link, which is not persistent) and waits until the link is gone.
//! Address, MTU and link state go through [`Netlink`], never `ip`.

use super::{Engine, Key, Peer, Tunnel, TunnelSpec};
use crate::kernel::netlink::Netlink;
use crate::kernel::{Ctx, KernelError};
use gotatun::device::{Device, DeviceBuilder, Peer as GotaPeer};
use gotatun::tun::tun_async_device::TunDevice;
use gotatun::udp::socket::UdpSocketFactory;
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use x25519_dalek::{PublicKey, StaticSecret};

type GotaDevice = Device<(UdpSocketFactory, TunDevice, TunDevice)>;

/// Runtime threads: one for each direction of traffic keeps both cores of a small host busy;
/// more only add context switches (measured in bench/encrypted.sh).
const WORKER_THREADS: usize = 2;
/// Socket buffers large enough for a burst of a fast sender while the other direction's thread
/// is busy encrypting (the kernel caps them at net.core.{r,w}mem_max).
const UDP_BUFFER_BYTES: usize = 4 << 20;
/// How long a closed TUN file may take to take its link with it.
const LINK_GONE_WITHIN: Duration = Duration::from_secs(10);
/// How long stopped sockets may take to free their port for the device's new ones.
const REBIND_WITHIN: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(10);

/// A userspace WireGuard device (or none yet), with its runtime.
pub struct UserspaceTunnel {
    /// `None` only while the value is being dropped.
    runtime: Option<tokio::runtime::Runtime>,
    netlink: Netlink,
    /// Shared with the runtime's tasks, which do the work.
    live: Arc<Mutex<Option<Live>>>,
}

/// What the running device was configured with, so that `apply` changes only what differs.
struct Live {
    device: GotaDevice,
    name: String,
    index: u32,
    public_key: Key,
    listen_port: u16,
}

impl UserspaceTunnel {
    /// A tunnel engine in the calling thread's network namespace; the device is made by the
    /// first `apply`. Fails when the runtime's threads cannot start or rtnetlink cannot open.
    pub fn open() -> Result<UserspaceTunnel, KernelError> {
        let ctx = Ctx::new("start userspace WireGuard", "runtime", None);
        let netns = std::fs::File::open("/proc/thread-self/ns/net").map_err(|e| ctx.os(e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name("netcompose-wg")
            .enable_all()
            // Threads are made by threads of this runtime, themselves made by the caller, so
            // they inherit its namespace; entering it again keeps that true whoever spawns.
            .on_thread_start(move || {
                // Entering the namespace one is already in cannot fail for root; a thread that
                // failed would stay in the one it inherited, which is this one.
                let _ = nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET);
            })
            .build()
            .map_err(|e| ctx.os(e))?;
        let netlink = Netlink::open_current(None, runtime.handle())?;
        Ok(UserspaceTunnel {
            runtime: Some(runtime),
            netlink,
            live: Arc::new(Mutex::new(None)),
        })
    }

    /// Run `work` on the tunnel's runtime and wait for it from this thread (which may belong
    /// to another runtime, or be in another namespace).
    fn run<R: Send + 'static>(
        &self,
        what: &str,
        work: impl Future<Output = Result<R, KernelError>> + Send + 'static,
    ) -> Result<R, KernelError> {
        let Some(runtime) = &self.runtime else {
            return Err(Ctx::new(what, "userspace WireGuard", None).protocol("the engine stopped"));
        };
        futures::executor::block_on(runtime.spawn(work)).map_err(|e| {
            Ctx::new(what, "userspace WireGuard", None)
                .protocol(format!("the tunnel's task failed: {e}"))
        })?
    }
}

impl Tunnel for UserspaceTunnel {
    fn engine(&self) -> Engine {
        Engine::Userspace
    }

    fn apply(&mut self, spec: &TunnelSpec) -> Result<(), KernelError> {
        let (netlink, live, spec) = (self.netlink.clone(), self.live.clone(), spec.clone());
        self.run("configure WireGuard", async move {
            apply_spec(&netlink, &mut *live.lock().await, &spec).await
        })
    }

    fn peers(&self) -> Result<Vec<Peer>, KernelError> {
        let live = self.live.clone();
        self.run("read WireGuard peers", async move {
            Ok(match &*live.lock().await {
                Some(live) => read_peers(&live.device).await,
                None => Vec::new(),
            })
        })
    }

    fn remove(&mut self) -> Result<(), KernelError> {
        let (netlink, live) = (self.netlink.clone(), self.live.clone());
        self.run("remove WireGuard device", async move {
            match live.lock().await.take() {
                Some(live) => stop(&netlink, live).await,
                None => Ok(()),
            }
        })
    }
}

impl Drop for UserspaceTunnel {
    fn drop(&mut self) {
        // The device's link must be gone when the value is: stop it and wait, then let the
        // runtime go without blocking (drop may run inside another runtime).
        let _ = self.remove();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Make the device match `spec`, creating it when there is none or its name changed.
async fn apply_spec(
    netlink: &Netlink,
    live: &mut Option<Live>,
    spec: &TunnelSpec,
) -> Result<(), KernelError> {
    if let Some(old) = live.take_if(|l| l.name != spec.name) {
        stop(netlink, old).await?;
    }
    let live = match live {
        Some(live) => live,
        None => live.insert(create(netlink, spec).await?),
    };
    let ctx = Ctx::new("configure WireGuard", &spec.name, None);
    super::link_settings(netlink, live.index, spec).await?;
    let public_key = super::KeyPair::from_private(spec.private_key.0).public;
    let had_peers = !live.device.peers().await.is_empty();
    let (new_key, new_port) = (
        live.public_key != public_key,
        live.listen_port != spec.listen_port,
    );
    let private = StaticSecret::from(spec.private_key.0);
    let wanted = desired_peers(spec);
    let written = live
        .device
        .write(async |w| {
            if new_key {
                w.set_private_key(private).await;
            }
            if new_port {
                w.set_listen_port(spec.listen_port);
            }
            sync_peers(w, wanted).await;
        })
        .await;
    live.public_key = public_key;
    live.listen_port = spec.listen_port;
    match written {
        // A new key or port rebinds the sockets; that raced the old ones' closing.
        Err(gotatun::device::Error::Bind(e, _)) if e.kind() == io::ErrorKind::AddrInUse => {
            restart(&live.device, &ctx).await
        }
        Err(e) => Err(gota_error(&ctx, e)),
        // gotatun binds its sockets and starts its tasks when it is built with peers or its
        // key or port changes, not when a first peer is added to a device without: start it.
        Ok(()) if !had_peers && !spec.peers.is_empty() && !new_key && !new_port => {
            restart(&live.device, &ctx).await
        }
        Ok(()) => Ok(()),
    }
}

/// Bring the device's sockets and tasks up (again). gotatun closes the old sockets in tasks
/// it aborts, which end a moment later; until they have, binding the same port fails with
/// EADDRINUSE, so that one failure is retried for a bounded while.
async fn restart(device: &GotaDevice, ctx: &Ctx) -> Result<(), KernelError> {
    let deadline = tokio::time::Instant::now() + REBIND_WITHIN;
    loop {
        device.suspend().await;
        match device.resume().await {
            Ok(()) => return Ok(()),
            Err(gotatun::device::Error::Bind(e, _))
                if e.kind() == io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(POLL).await;
            }
            Err(e) => return Err(gota_error(ctx, e)),
        }
    }
}

/// Make the TUN link (in this runtime thread's namespace), give it its MTU, address and state,
/// and start WireGuard on it.
async fn create(netlink: &Netlink, spec: &TunnelSpec) -> Result<Live, KernelError> {
    let ctx = Ctx::new("create tun", &spec.name, None);
    let builder = DeviceBuilder::new()
        .with_default_udp()
        .udp_recv_buffer_size(UDP_BUFFER_BYTES)
        .udp_send_buffer_size(UDP_BUFFER_BYTES)
        .with_listen_port(spec.listen_port)
        .with_private_key(StaticSecret::from(spec.private_key.0))
        .with_peers(desired_peers(spec).into_values())
        .create_tun(&spec.name)
        .map_err(|e| gota_error(&ctx, e))?;
    let index = netlink
        .link_index(&spec.name)
        .await?
        .ok_or_else(|| ctx.invalid("the TUN link vanished as it was made"))?;
    // The MTU first: gotatun reads it when it is built.
    super::link_settings(netlink, index, spec).await?;
    let device = match builder.build().await {
        Ok(device) => device,
        Err(e) => {
            // The failed device's TUN file closes as its last task lets go of it.
            link_gone(netlink, index, &spec.name).await?;
            return Err(gota_error(&ctx, e));
        }
    };
    Ok(Live {
        device,
        name: spec.name.clone(),
        index,
        public_key: super::KeyPair::from_private(spec.private_key.0).public,
        listen_port: spec.listen_port,
    })
}

/// The spec's peers as gotatun's, by public key.
fn desired_peers(spec: &TunnelSpec) -> BTreeMap<[u8; 32], GotaPeer> {
    spec.peers
        .iter()
        .map(|p| {
            let peer = GotaPeer::new(PublicKey::from(p.public_key.0))
                .with_endpoint(p.endpoint)
                .with_allowed_ips(p.allowed_ips.iter().copied());
            (p.public_key.0, peer)
        })
        .collect()
}

/// Add, update or remove peers so that the device has exactly `wanted`, leaving alone those
/// that already match (their sessions go on). A peer whose key changed is a removal (which
/// frees its allowed IPs) and an addition.
async fn sync_peers(
    w: &mut gotatun::device::configure::DeviceWrite<'_, (UdpSocketFactory, TunDevice, TunDevice)>,
    mut wanted: BTreeMap<[u8; 32], GotaPeer>,
) {
    for have in w.peers().await {
        let key = have.peer.public_key;
        match wanted.remove(key.as_bytes()) {
            None => {
                w.remove_peer(&key).await;
            }
            Some(want) => {
                if !same_peer(&have.peer, &want) {
                    w.update_peer(want).await;
                }
            }
        }
    }
    for want in wanted.into_values() {
        w.add_peer(want);
    }
}

fn same_peer(have: &GotaPeer, want: &GotaPeer) -> bool {
    let mut a = have.allowed_ips.clone();
    let mut b = want.allowed_ips.clone();
    a.sort();
    b.sort();
    have.endpoint == want.endpoint && a == b
}

async fn read_peers(device: &GotaDevice) -> Vec<Peer> {
    let mut peers: Vec<Peer> = device
        .peers()
        .await
        .into_iter()
        .map(|p| {
            let mut allowed_ips = p.peer.allowed_ips;
            allowed_ips.sort();
            Peer {
                public_key: Key(*p.peer.public_key.as_bytes()),
                // Every peer is given an endpoint; a peer only roams to another one.
                endpoint: p
                    .peer
                    .endpoint
                    .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))),
                allowed_ips,
            }
        })
        .collect();
    peers.sort();
    peers
}

/// Stop WireGuard and wait until the TUN link is gone (the kernel removes it when the last file
/// on it closes, once gotatun's tasks have let go of it).
async fn stop(netlink: &Netlink, live: Live) -> Result<(), KernelError> {
    let Live {
        device,
        name,
        index,
        ..
    } = live;
    device.stop().await;
    link_gone(netlink, index, &name).await
}

/// Wait until the TUN link is gone: the kernel removes it when its file closes, which happens
/// when the last of gotatun's tasks holding it has ended.
async fn link_gone(netlink: &Netlink, index: u32, name: &str) -> Result<(), KernelError> {
    let ctx = Ctx::new("remove tun", name, None);
    let deadline = tokio::time::Instant::now() + LINK_GONE_WITHIN;
    while netlink.link_by_index(index).await?.is_some() {
        if tokio::time::Instant::now() > deadline {
            return Err(ctx.protocol("the TUN link stayed after WireGuard stopped"));
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

fn gota_error(ctx: &Ctx, e: gotatun::device::Error) -> KernelError {
    use gotatun::device::Error as E;
    match e {
        E::IoError(io) | E::Bind(io, _) => ctx.os(io),
        other => ctx.protocol(other.to_string()),
    }
}
