//! A host's share of a cluster project against the in-memory kernel: only local replicas are
//! built, every overlay gets a VXLAN port and every remote endpoint its FDB and neighbour
//! entries; DNS and VIPs include remote replicas; a deleted entry is drift that `up` repairs;
//! an endpoint that moved to another host moves its entry in place; a VXLAN port held by
//! another socket fails with an error naming it; other hosts' endpoints coming and going, and
//! a replica placed here, are applied as a difference to the recorded state alone.

use crate::apply::{apply, ApplyError, Step};
use crate::kernel::fake::Fake;
use crate::kernel::machine::{Machine, Overlay};
use crate::kernel::Kernel;
use crate::load::LoadOptions;
use crate::model::cluster::{ClusterView, RemoteEndpoint};
use crate::model::resource::Resource;
use crate::model::{self, Context, ResourceId, Spec};
use crate::observe::live::observe;
use crate::pipeline::{checked_project, Checked};
use crate::plan;
use std::collections::HashMap;
use std::net::IpAddr;

const COMPOSE: &str = "
name: t
services:
  web:
    deploy: {replicas: 3}
    networks: [mesh, local]
    ports: ['8080:80']
  db:
    networks: [mesh]
networks:
  mesh:
    driver: overlay
    ipam: {config: [{subnet: 10.60.0.0/24}]}
  local:
    ipam: {config: [{subnet: 10.61.0.0/24}]}
";

fn checked() -> Checked {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    std::fs::write(&file, COMPOSE).unwrap();
    let opts = LoadOptions {
        files: vec![file],
        environment: Some(HashMap::new()),
        ..Default::default()
    };
    checked_project(&opts).unwrap_or_else(|e| panic!("{e:?}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The view of host `h1` (web[1] and db[1] here; web[2] on h2, web[3] on h3), built from one
/// run of the model over the whole project, as the store would hold it.
fn view() -> (Checked, ClusterView) {
    let checked = checked();
    let all = model::build(&checked.project, &Context::default()).unwrap();
    let mesh = &all.allocations.networks["mesh"];
    let remote = [(2, "h2", "192.0.2.2"), (3, "h3", "192.0.2.3")]
        .into_iter()
        .map(|(index, node, vtep)| {
            let owner = format!("web[{index}]");
            RemoteEndpoint {
                network: "mesh".into(),
                service: "web".into(),
                index,
                node: node.into(),
                vtep: ip(vtep),
                mac: mesh.macs[&owner].clone(),
                ipv4: match mesh.addresses[&owner][0] {
                    IpAddr::V4(v4) => Some(v4),
                    IpAddr::V6(_) => None,
                },
                ipv6: None,
            }
        })
        .collect();
    let view = ClusterView {
        node: "h1".into(),
        underlay: Some(ip("192.0.2.1")),
        underlay_mtu: 1500,
        local: [("web".to_string(), 1), ("db".to_string(), 1)]
            .into_iter()
            .collect(),
        remote,
        allocations: all.allocations,
        tunnel: None,
        assignment: None,
    };
    (checked, view)
}

fn desired(checked: &Checked, view: &ClusterView) -> Vec<Resource> {
    let ctx = Context {
        previous: view.allocations.clone(),
        cluster: Some(view.clone()),
        ..Default::default()
    };
    model::build(&checked.project, &ctx).unwrap().resources
}

fn quiet(_: Step<'_>) {}

async fn converge(
    k: &Kernel<Fake>,
    state: &[Resource],
    desired: &[Resource],
) -> Result<Vec<plan::Change>, Vec<ApplyError>> {
    let observed = observe(k, state, desired).await.unwrap();
    let changes = plan::diff(&observed, desired);
    apply(k, &observed, desired, &changes, &quiet).await?;
    Ok(changes)
}

async fn assert_converged(k: &Kernel<Fake>, desired: &[Resource]) {
    let observed = observe(k, desired, desired).await.unwrap();
    let changes = plan::diff(&observed, desired);
    assert!(changes.is_empty(), "left over: {changes:#?}");
}

fn spec<'a>(desired: &'a [Resource], id: &ResourceId) -> &'a Spec {
    &desired.iter().find(|r| &r.address == id).unwrap().spec
}

#[test]
fn only_local_replicas_are_built_and_remote_ones_are_named() {
    let (checked, view) = view();
    let desired = desired(&checked, &view);
    let namespaces: Vec<String> = desired
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::Namespace(n) => Some(n.name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(namespaces, ["t-db-1", "t-web-1"]);
    let Spec::Vxlan(vx) = spec(&desired, &ResourceId::vxlan("mesh")) else {
        panic!()
    };
    assert_eq!(vx.port, 4789);
    assert_eq!(vx.local, Some(ip("192.0.2.1")));
    assert!(vx.proxy);
    assert_eq!(vx.mtu, 1450);
    assert_eq!(Some(vx.vni), view.allocations.networks["mesh"].vni);
    // No VXLAN port for a local network, and the overlay's bridge and veths take its MTU.
    assert!(!desired
        .iter()
        .any(|r| r.address == ResourceId::vxlan("local")));
    for r in &desired {
        match &r.spec {
            Spec::Bridge(b) if b.network == "mesh" => assert_eq!(b.mtu, 1450),
            Spec::Bridge(b) => assert_eq!(b.mtu, 1500),
            Spec::Link(l) if l.network == "mesh" => assert_eq!(l.mtu, 1450),
            Spec::Link(l) => assert_eq!(l.mtu, 1500),
            _ => {}
        }
    }
    let web2 = view.remote[0].ipv4.unwrap();
    let Spec::Remote(e) = spec(&desired, &ResourceId::remote("mesh", IpAddr::V4(web2))) else {
        panic!()
    };
    assert_eq!((e.vtep, e.node.as_str()), (ip("192.0.2.2"), "h2"));
    // The overlay's zone answers the remote replicas; the local network's only this host's.
    let Spec::Dns(mesh) = spec(&desired, &ResourceId::dns("mesh")) else {
        panic!()
    };
    assert_eq!(mesh.records["t-web-2"], vec![IpAddr::V4(web2)]);
    assert_eq!(mesh.records["tasks.web"].len(), 3);
    let Spec::Dns(local) = spec(&desired, &ResourceId::dns("local")) else {
        panic!()
    };
    assert!(!local.records.contains_key("t-web-2"));
    assert_eq!(local.records["tasks.web"].len(), 1);
    // The VIP balances over local and remote replicas on the overlay.
    let Spec::Vip(vip) = spec(&desired, &ResourceId::vip("web", "mesh")) else {
        panic!()
    };
    assert_eq!(vip.backends.len(), 3);
    assert!(vip.backends.contains(&IpAddr::V4(web2)));
}

#[test]
fn published_ports_balance_over_this_host_s_replicas() {
    let (checked, mut view) = view();
    // h2's share: web[2] only (replica 1 runs elsewhere).
    view.local = [("web".to_string(), 2)].into_iter().collect();
    let desired = desired(&checked, &view);
    let Spec::Firewall(host) = spec(&desired, &ResourceId::HostFirewall) else {
        panic!()
    };
    let rules = serde_json::to_string(&host.chains).unwrap();
    let addr = |i: u32| view.allocations.networks["local"].addresses[&format!("web[{i}]")][0];
    assert!(rules.contains(&addr(2).to_string()), "{rules}");
    assert!(!rules.contains(&addr(1).to_string()), "{rules}");
}

#[test]
fn the_vxlan_port_can_be_set_and_a_bad_one_is_a_diagnostic() {
    let (mut checked, view) = view();
    let mesh = checked.project.networks.get_mut("mesh").unwrap();
    mesh.driver_opts.insert(
        model::overlay::VXLAN_PORT_OPT.into(),
        crate::spec::Spanned::new("4790".into(), Default::default()),
    );
    let desired = desired(&checked, &view);
    let Spec::Vxlan(vx) = spec(&desired, &ResourceId::vxlan("mesh")) else {
        panic!()
    };
    assert_eq!(vx.port, 4790);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    let bad = COMPOSE.replace(
        "driver: overlay",
        "driver: overlay\n    driver_opts: {vxlan_port: \"70000\"}",
    );
    std::fs::write(&file, bad).unwrap();
    let opts = LoadOptions {
        files: vec![file],
        environment: Some(HashMap::new()),
        ..Default::default()
    };
    let Err(crate::pipeline::Failure::Invalid { diags, .. }) = checked_project(&opts) else {
        panic!("a bad VXLAN port was accepted")
    };
    let said = format!("{:?}", diags.errors);
    assert!(
        said.contains("VXLAN port") && said.contains("70000"),
        "{said}"
    );
}

#[test]
fn the_plan_notes_say_which_networks_stay_local() {
    let (checked, view) = view();
    let notes = model::overlay::notes(&checked.project, &view);
    assert!(
        notes[0].starts_with("node h1: 2 of the project's replicas"),
        "{notes:?}"
    );
    assert!(
        notes[1].starts_with("network `local` stays local to each host"),
        "{notes:?}"
    );
}

#[test]
fn an_ipv6_underlay_and_a_lower_file_mtu() {
    let (checked, mut view) = view();
    view.underlay = Some(ip("fd00::1"));
    view.underlay_mtu = 9000;
    let desired = desired(&checked, &view);
    let Spec::Vxlan(vx) = spec(&desired, &ResourceId::vxlan("mesh")) else {
        panic!()
    };
    assert_eq!(vx.mtu, 8930);
    let net = &checked.project.networks["mesh"];
    let mut lower = net.clone();
    lower.driver_opts.insert(
        "com.docker.network.driver.mtu".into(),
        crate::spec::Spanned::new("1400".into(), Default::default()),
    );
    assert_eq!(model::overlay::overlay_mtu(&view, &lower), 1400);
}

#[test]
fn without_a_view_nothing_changes() {
    let checked = checked();
    let desired = model::build(&checked.project, &Context::default())
        .unwrap()
        .resources;
    assert!(!desired
        .iter()
        .any(|r| matches!(r.spec, Spec::Vxlan(_) | Spec::Remote(_))));
    assert_eq!(
        desired
            .iter()
            .filter(|r| matches!(r.spec, Spec::Namespace(_)))
            .count(),
        4
    );
}

#[tokio::test]
async fn entries_are_applied_observed_repaired_and_moved() {
    let (checked, mut view) = view();
    let desired = desired(&checked, &view);
    let k = Kernel::new("t", Fake::new());
    converge(&k, &[], &desired).await.unwrap();
    assert_converged(&k, &desired).await;
    let Spec::Vxlan(vx) = spec(&desired, &ResourceId::vxlan("mesh")) else {
        panic!()
    };
    let index = k.with(|w| w.link_named(None, &vx.name).unwrap().link.index);
    let entries = k.host().fdb(index).await.unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(k.host().neighbours(index).await.unwrap().len(), 2);

    // Drift: an FDB entry deleted behind netcompose's back is seen and written again.
    let web2 = view.remote[0].clone();
    k.with(|w| {
        let link = w.link_named(None, &vx.name).unwrap();
        link.fdb.retain(|e| Some(e.dst.unwrap()) != Some(web2.vtep));
    });
    let changes = converge(&k, &desired, &desired).await.unwrap();
    let id = ResourceId::remote("mesh", IpAddr::V4(web2.ipv4.unwrap()));
    assert_eq!(
        changes.iter().map(|c| &c.address).collect::<Vec<_>>(),
        [&id]
    );
    assert_converged(&k, &desired).await;

    // web[2] moved from h2 to h3: its entry follows, replaced in place.
    view.remote[0].node = "h3".into();
    view.remote[0].vtep = ip("192.0.2.3");
    let moved = self::desired(&checked, &view);
    converge(&k, &desired, &moved).await.unwrap();
    assert_converged(&k, &moved).await;
    let mac = crate::ipam::mac::parse_mac(&web2.mac).unwrap();
    let entries = k.host().fdb(index).await.unwrap();
    let entry = entries.iter().find(|e| e.mac == mac).unwrap();
    assert_eq!(entry.dst, Some(ip("192.0.2.3")));

    // web[3]'s host died: its entries go.
    view.remote.truncate(1);
    let fewer = self::desired(&checked, &view);
    converge(&k, &moved, &fewer).await.unwrap();
    assert_converged(&k, &fewer).await;
    assert_eq!(k.host().fdb(index).await.unwrap().len(), 1);
    assert_eq!(k.host().neighbours(index).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_taken_vxlan_port_is_an_error_naming_it() {
    let (checked, view) = view();
    let desired = desired(&checked, &view);
    let k = Kernel::new("t", Fake::new());
    k.with(|w| w.udp_ports_taken.insert(4789));
    let errors = converge(&k, &[], &desired).await.unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| matches!(e, ApplyError::VxlanPortInUse { port: 4789, .. })),
        "{errors:?}"
    );
    assert!(errors
        .iter()
        .any(|e| e.to_string().contains("UDP port 4789")));
}

/// What an agent does when the files are the ones it last built (`Observation::Recorded`):
/// the difference from the desired state it recorded is applied without reading anything
/// back and leaves the kernel as a full run would. Another host's endpoints coming and going
/// touch nothing of this host's replicas (only remote entries, names, VIPs and their maps); a
/// replica placed here is built beside the others.
#[tokio::test]
async fn a_new_view_applied_to_the_record_alone_leaves_nothing_to_do() {
    let (checked, mut view) = view();
    let later = view.remote.pop().unwrap();
    let before = desired(&checked, &view);
    let k = Kernel::new("t", Fake::new());
    converge(&k, &[], &before).await.unwrap();
    view.remote.push(later);
    let after = desired(&checked, &view);
    let moved = view.remote.remove(0);
    let fewer = desired(&checked, &view);
    view.local.insert((moved.service, moved.index));
    let grown = desired(&checked, &view);
    for (recorded, next) in [(&before, &after), (&after, &fewer), (&fewer, &grown)] {
        let changes = plan::diff(recorded, next);
        assert!(!changes.is_empty());
        let remote_only = changes.iter().all(|c| {
            let r = next
                .iter()
                .chain(recorded.iter())
                .find(|r| r.address == c.address)
                .unwrap();
            matches!(
                r.spec,
                Spec::Remote(_) | Spec::Dns(_) | Spec::Vip(_) | Spec::Firewall(_)
            )
        });
        assert_eq!(remote_only, next != &grown, "{changes:#?}");
        apply(&k, recorded, next, &changes, &quiet).await.unwrap();
        assert_converged(&k, next).await;
    }
}
