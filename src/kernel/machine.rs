//! The kernel mechanisms that `observe` and `apply` use, as traits: links, addresses and
//! routes of one namespace ([`Links`]), named namespaces ([`Namespaces`]), nftables tables
//! ([`Firewall`]), `net.*` sysctls ([`Sysctls`]) and the replica files under /etc/netns
//! ([`ReplicaFiles`]), qdiscs and htb classes ([`TrafficControl`]), VXLAN devices with their
//! FDB and neighbour entries ([`Overlay`]) and whether a UDP port can be bound ([`Ports`]).
//! [`Machine`] is all of them with a handle per namespace.
//!
//! The real machine is [`super::system::System`]; [`super::fake::Fake`] keeps the same facts in
//! memory so that the applier and the observer are tested without root. The methods mirror the
//! kernel's own operations one for one (no policy), and fail with the same [`KernelError`]
//! kinds (`Exists`, `NotFound`) as the kernel does.
//!
//! Methods return `Send` futures so that a caller may run a reconciliation on any runtime
//! thread; what blocks (a thread inside a namespace, a file, a process) runs off the runtime.

use super::generations::{Digest, TableRead};
pub use super::netlink::{FdbEntry, Neighbour, VxlanSpec};
use super::netlink::{Link, MacvlanMode, Route};
use super::KernelError;
use ipnetwork::IpNetwork;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

/// What tc holds on a link.
pub use super::netlink::tc::{HtbClass, HtbShape, NetemShape, Qdisc, QdiscKind, Shaper, TreeState};
/// The table contents the nftables layer loads.
pub use super::nftables::Table;
/// What a namespace holds, read in one go.
pub use super::survey::Survey;

type Res<T> = Result<T, KernelError>;

/// A veth pair made from one namespace, its peer created directly inside namespace `peer_ns`
/// with its name and MAC in the same request. The peer starts down.
#[derive(Debug, Clone, Default)]
pub struct NewVeth {
    pub name: String,
    /// Set with a second request (the kernel ignores an alias in the creating one).
    pub alias: Option<String>,
    /// MTU of both ends.
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    /// Enslave this end to the bridge with this index.
    pub master: Option<u32>,
    pub up: bool,
    pub peer_name: String,
    pub peer_ns: String,
    pub peer_mac: Option<[u8; 6]>,
}

/// A macvlan sub-interface of `parent` (an index in the creating namespace), created inside
/// namespace `ns`.
#[derive(Debug, Clone)]
pub struct NewMacvlan {
    pub name: String,
    pub parent: u32,
    pub mode: MacvlanMode,
    pub ns: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    pub up: bool,
}

/// What a new namespace is given before it gets its name, so that a run killed at any point
/// leaves either no namespace or a complete one: `lo` carries `lo_alias` and is up, and each
/// sysctl is written (one the kernel lacks, such as IPv6 keys on a kernel without IPv6, is
/// skipped).
#[derive(Debug, Clone, Default)]
pub struct NetnsInit {
    pub lo_alias: String,
    pub sysctls: Vec<(String, String)>,
}

/// Links, addresses and routes of one namespace (rtnetlink). The listings of one handle may
/// be asked for concurrently; they are answered one after the other.
pub trait Links: Clone + Send + Sync {
    fn links(&self) -> impl Future<Output = Res<Vec<Link>>> + Send;
    fn link_by_name(&self, name: &str) -> impl Future<Output = Res<Option<Link>>> + Send;
    fn link_by_index(&self, index: u32) -> impl Future<Output = Res<Option<Link>>> + Send;
    /// Every address, as (ifindex, address/prefix).
    fn addresses(&self) -> impl Future<Output = Res<Vec<(u32, IpNetwork)>>> + Send;
    fn routes(&self) -> impl Future<Output = Res<Vec<Route>>> + Send;

    /// A bridge with a MAC fixed in the creating request; returns its index.
    fn create_bridge(
        &self,
        name: &str,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
        alias: Option<&str>,
    ) -> impl Future<Output = Res<u32>> + Send;
    /// Returns the index of this namespace's end.
    fn create_veth(&self, spec: &NewVeth) -> impl Future<Output = Res<u32>> + Send;
    fn create_macvlan(&self, spec: &NewMacvlan) -> impl Future<Output = Res<()>> + Send;
    fn set_up(&self, index: u32) -> impl Future<Output = Res<()>> + Send;
    /// Administratively down (a failure drill); its addresses stay.
    fn set_down(&self, index: u32) -> impl Future<Output = Res<()>> + Send;
    fn set_mtu(&self, index: u32, mtu: u32) -> impl Future<Output = Res<()>> + Send;
    fn set_mac(&self, index: u32, mac: [u8; 6]) -> impl Future<Output = Res<()>> + Send;
    fn set_alias(&self, index: u32, alias: Option<&str>) -> impl Future<Output = Res<()>> + Send;
    /// Deleting one end of a veth deletes the pair; deleting a bridge releases its ports.
    fn delete_link(&self, index: u32) -> impl Future<Output = Res<()>> + Send;
    /// Adds or replaces.
    fn add_address(&self, index: u32, addr: IpNetwork) -> impl Future<Output = Res<()>> + Send;
    fn delete_address(&self, index: u32, addr: IpNetwork) -> impl Future<Output = Res<()>> + Send;
    /// Adds or replaces a route of the main table.
    fn add_route(
        &self,
        dst: IpNetwork,
        gateway: Option<IpAddr>,
        oif: Option<u32>,
    ) -> impl Future<Output = Res<()>> + Send;
    fn delete_route(
        &self,
        dst: IpNetwork,
        gateway: Option<IpAddr>,
        oif: Option<u32>,
    ) -> impl Future<Output = Res<()>> + Send;
}

/// Qdiscs and htb classes of the links of one namespace (tc over rtnetlink).
pub trait TrafficControl: Send + Sync {
    fn qdiscs(&self, index: u32) -> impl Future<Output = Res<Vec<Qdisc>>> + Send;
    fn htb_classes(&self, index: u32) -> impl Future<Output = Res<Vec<HtbClass>>> + Send;
    /// `Exists` when the parent already holds a qdisc; `Unsupported` for a kind the kernel
    /// lacks.
    fn add_qdisc(&self, index: u32, q: &Qdisc) -> impl Future<Output = Res<()>> + Send;
    /// The root qdisc and everything under it; `NotFound` when the link has only its default.
    fn delete_root_qdisc(&self, index: u32) -> impl Future<Output = Res<()>> + Send;
    /// Add or change a class.
    fn set_htb_class(&self, index: u32, c: &HtbClass) -> impl Future<Output = Res<()>> + Send;
}

/// VXLAN devices of one namespace and their static entries (rtnetlink). Entries are written
/// with replace, never create-exclusive: an endpoint that moved to another host must move its
/// entry, not fail on the old one.
pub trait Overlay: Send + Sync {
    /// Returns the device's index. Asked up, it binds its UDP port at once: `AddressInUse`
    /// when the port is taken, and then no device is left behind.
    fn create_vxlan(&self, spec: &VxlanSpec) -> impl Future<Output = Res<u32>> + Send;
    fn fdb(&self, index: u32) -> impl Future<Output = Res<Vec<FdbEntry>>> + Send;
    /// `bridge fdb replace MAC dev INDEX dst DST self permanent`.
    fn set_fdb(
        &self,
        index: u32,
        mac: [u8; 6],
        dst: IpAddr,
    ) -> impl Future<Output = Res<()>> + Send;
    fn delete_fdb(
        &self,
        index: u32,
        mac: [u8; 6],
        dst: Option<IpAddr>,
    ) -> impl Future<Output = Res<()>> + Send;
    fn neighbours(&self, index: u32) -> impl Future<Output = Res<Vec<Neighbour>>> + Send;
    /// `ip neigh replace IP lladdr MAC dev INDEX nud permanent`.
    fn set_neighbour(
        &self,
        index: u32,
        ip: IpAddr,
        mac: [u8; 6],
    ) -> impl Future<Output = Res<()>> + Send;
    fn delete_neighbour(&self, index: u32, ip: IpAddr) -> impl Future<Output = Res<()>> + Send;
}

/// UDP ports of the host namespace.
pub trait Ports: Send + Sync {
    /// Whether a socket could bind UDP `port` on every address now (a VXLAN device binds it
    /// so when it comes up).
    fn udp_port_free(&self, port: u16) -> impl Future<Output = Res<bool>> + Send;
}

/// Named network namespaces (`/run/netns`).
pub trait Namespaces: Send + Sync {
    /// Create namespace `name`, set up as `init` says before it is named. `Exists` when a live
    /// namespace of that name is there.
    fn create_netns(&self, name: &str, init: &NetnsInit) -> impl Future<Output = Res<()>> + Send;
    /// Whether `name` is a live namespace (not a pin file left with nothing mounted on it).
    fn netns_exists(&self, name: &str) -> impl Future<Output = bool> + Send;
    /// The names pinned in the directory, live or stale, sorted.
    fn list_netns(&self) -> impl Future<Output = Res<Vec<String>>> + Send;
    /// [`Namespaces::list_netns`], each name with whether it is a live namespace, in one go.
    fn list_netns_live(&self) -> impl Future<Output = Res<Vec<(String, bool)>>> + Send;
    /// Unpin `name` (live or stale); false when there was nothing. The kernel frees the
    /// namespace, with every link in it and the peers of its veths, once nothing holds it:
    /// what this machine holds of it is let go by [`Namespaces::let_go`].
    fn delete_netns(&self, name: &str) -> impl Future<Output = Res<bool>> + Send;
    /// Let go of every namespace deleted so far, all at once: the kernel frees the namespaces
    /// let go together in one pass (one round of RCU grace periods and one batch of device
    /// unregistrations for all of them), and the unpinning before was not slowed by a cleanup
    /// running alongside.
    fn let_go(&self);
    /// The alias of each namespace's lo (the mark of its owner), in the order of `names`:
    /// None for a name under which no live namespace is pinned. A run checks it just before
    /// it deletes a namespace.
    fn netns_marks(
        &self,
        names: &[String],
    ) -> impl Future<Output = Res<Vec<Option<Option<String>>>>> + Send;
}

/// nftables tables of family inet, in a namespace (`None`: the host).
pub trait Firewall: Send + Sync {
    /// Replace the table with `contents` in one transaction (created if missing). Shared: the
    /// replicas of a service hand over one table, which a machine may know again by address.
    fn replace_table(
        &self,
        ns: Option<&str>,
        table: &str,
        contents: &Arc<Table>,
    ) -> impl Future<Output = Res<()>> + Send;
    /// Turn the live table from `old` into `new` in one transaction: chain by chain, and a
    /// map element by element.
    fn update_table(
        &self,
        ns: Option<&str>,
        table: &str,
        old: &Table,
        new: &Table,
    ) -> impl Future<Output = Res<()>> + Send;
    /// Delete the table; nothing to do when it does not exist.
    fn delete_table(&self, ns: Option<&str>, table: &str) -> impl Future<Output = Res<()>> + Send;
    /// Each chain with the tags of its rules in order, and the named maps with their
    /// elements ([`TableRead::Live`]), or that the table is missing. `expected` is the digest
    /// of what the caller believes the table holds: a machine that knows the table has not
    /// changed since it held exactly that may answer [`TableRead::Unchanged`] without reading
    /// (see [`super::generations`]).
    fn read_table(
        &self,
        ns: Option<&str>,
        table: &str,
        expected: Digest,
    ) -> impl Future<Output = Res<TableRead>> + Send;
}

/// `net.*` sysctls of a namespace (`None`: the host).
pub trait Sysctls: Send + Sync {
    /// The value, without its trailing newline.
    fn read_sysctl(&self, ns: Option<&str>, key: &str) -> impl Future<Output = Res<String>> + Send;
    fn write_sysctl(
        &self,
        ns: Option<&str>,
        key: &str,
        value: &str,
    ) -> impl Future<Output = Res<()>> + Send;
}

/// The files `ip netns exec` binds over /etc for a namespace: /etc/netns/<ns>/<name>.
pub trait ReplicaFiles: Send + Sync {
    /// None when the file does not exist.
    fn read_file(&self, ns: &str, name: &str) -> impl Future<Output = Res<Option<String>>> + Send;
    /// Write each file atomically (a temporary file renamed over it), creating the directory.
    fn write_files(
        &self,
        ns: &str,
        files: &[(&str, String)],
    ) -> impl Future<Output = Res<()>> + Send;
    /// Remove these files, then the directory if that left it empty.
    fn remove_files(&self, ns: &str, names: &[&str]) -> impl Future<Output = Res<()>> + Send;
    /// Remove the namespace's directory with everything in it.
    fn remove_dir(&self, ns: &str) -> impl Future<Output = Res<()>> + Send;
    /// The namespaces that have a directory.
    fn file_dirs(&self) -> impl Future<Output = Res<Vec<String>>> + Send;
    /// The entries of a namespace's directory.
    fn file_names(&self, ns: &str) -> impl Future<Output = Res<Vec<String>>> + Send;
}

/// Everything the applier and the observer use of a machine.
pub trait Machine: Namespaces + Firewall + Sysctls + ReplicaFiles + Ports {
    type Net: Links + TrafficControl + Overlay;
    /// The host namespace's handle.
    fn host(&self) -> &Self::Net;
    /// The handle of namespace `ns`, opened on first use and kept.
    fn netns(&self, ns: &str) -> impl Future<Output = Res<Self::Net>> + Send;
    /// The links of each namespace of `names` (and, when `full`, its addresses and routes),
    /// read in one go, in the order of `names`; None for a pin file with nothing mounted on
    /// it, which is no namespace.
    fn survey(
        &self,
        names: &[String],
        full: bool,
    ) -> impl Future<Output = Res<Vec<Option<Survey>>>> + Send;
    /// Of the last survey's namespaces, how many were taken from a process that keeps them
    /// (see [`super::survey::SurveySource`]) and how many came with a lent socket.
    fn kept_by_source(&self) -> (usize, usize) {
        (0, 0)
    }
}
