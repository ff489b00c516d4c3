//! Encrypted overlays in a host's share, against the in-memory kernel: the VXLAN of an
//! encrypted network runs from this host's tunnel address with WireGuard's overhead off its
//! MTU, a plain overlay beside it is unchanged, plain VXLAN for the encrypted VNI is dropped
//! unless it came through the tunnel (a rule in the host table that reads as nft), no tunnel
//! means no VXLAN for it at all; validate accepts `encrypted` on overlays only, and on one host
//! the plan says nothing crosses a wire.

use crate::apply::{apply, Step};
use crate::kernel::fake::Fake;
use crate::kernel::Kernel;
use crate::load::LoadOptions;
use crate::model::cluster::{ClusterView, RemoteEndpoint, TunnelEnd};
use crate::model::resource::Resource;
use crate::model::{self, Context, ResourceId, Spec};
use crate::observe::live::observe;
use crate::pipeline::{checked_project, Checked, Failure};
use crate::plan;
use std::collections::HashMap;
use std::net::IpAddr;

const COMPOSE: &str = "
name: t
services:
  web:
    deploy: {replicas: 2}
    networks: [secret, plain]
networks:
  secret:
    driver: overlay
    driver_opts: {encrypted: \"\"}
    ipam: {config: [{subnet: 10.60.0.0/24}]}
  plain:
    driver: overlay
    ipam: {config: [{subnet: 10.61.0.0/24}]}
";

fn load(text: &str) -> Result<Checked, Failure> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    std::fs::write(&file, text).unwrap();
    checked_project(&LoadOptions {
        files: vec![file],
        environment: Some(HashMap::new()),
        ..Default::default()
    })
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Host h1 runs web[1]; web[2] runs on h2, published on `secret` at h2's tunnel address and on
/// `plain` at its underlay address.
fn view(tunnel: bool) -> (Checked, ClusterView) {
    let checked = load(COMPOSE).unwrap_or_else(|e| panic!("{e:?}"));
    let all = model::build(&checked.project, &Context::default()).unwrap();
    let remote = [("secret", "10.232.0.2"), ("plain", "192.0.2.2")]
        .into_iter()
        .map(|(net, vtep)| {
            let a = &all.allocations.networks[net];
            RemoteEndpoint {
                network: net.into(),
                service: "web".into(),
                index: 2,
                node: "h2".into(),
                vtep: ip(vtep),
                mac: a.macs["web[2]"].clone(),
                ipv4: match a.addresses["web[2]"][0] {
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
        local: [("web".to_string(), 1)].into_iter().collect(),
        remote,
        allocations: all.allocations,
        tunnel: tunnel.then(|| TunnelEnd {
            device: "ncwg0".into(),
            address: ip("10.232.0.1"),
        }),
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

fn vxlan<'a>(desired: &'a [Resource], net: &str) -> Option<&'a model::resource::Vxlan> {
    desired.iter().find_map(|r| match &r.spec {
        Spec::Vxlan(v) if r.address == ResourceId::vxlan(net) => Some(v),
        _ => None,
    })
}

fn input_rules(desired: &[Resource]) -> Vec<String> {
    desired
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::Firewall(f) if r.address == ResourceId::HostFirewall => Some(f),
            _ => None,
        })
        .flat_map(|f| f.chains.iter().filter(|c| c.hook == "input"))
        .flat_map(|c| c.rules.iter().map(ToString::to_string))
        .collect()
}

#[test]
fn an_encrypted_network_runs_over_the_tunnel_beside_a_plain_one() {
    let (checked, view) = view(true);
    let desired = desired(&checked, &view);
    let secret = vxlan(&desired, "secret").unwrap();
    assert_eq!(secret.local, Some(ip("10.232.0.1")));
    assert_eq!(secret.mtu, 1500 - 50 - 80);
    let plain = vxlan(&desired, "plain").unwrap();
    assert_eq!(plain.local, Some(ip("192.0.2.1")));
    assert_eq!(plain.mtu, 1450);
    for r in &desired {
        match &r.spec {
            Spec::Link(l) if l.network == "secret" => assert_eq!(l.mtu, 1370),
            Spec::Link(l) => assert_eq!(l.mtu, 1450),
            Spec::Remote(e) if e.network == "secret" => assert_eq!(e.vtep, ip("10.232.0.2")),
            Spec::Remote(e) => assert_eq!(e.vtep, ip("192.0.2.2")),
            _ => {}
        }
    }
    assert_eq!(
        input_rules(&desired),
        [format!(
            "iifname != \"ncwg0\" meta l4proto udp th dport 4789 @th,96,24 {} drop",
            secret.vni
        )]
    );
    let notes = model::overlay::notes(&checked.project, &view);
    assert!(
        notes.iter().any(|n| n.starts_with(
            "network `secret` is encrypted: its VXLAN runs between the hosts' WireGuard"
        ) && n.contains("its MTU is 1370")),
        "{notes:?}"
    );
}

#[test]
fn without_a_tunnel_an_encrypted_network_is_not_built_in_the_clear() {
    let (checked, view) = view(false);
    let desired = desired(&checked, &view);
    assert!(vxlan(&desired, "secret").is_none());
    assert!(!desired
        .iter()
        .any(|r| matches!(&r.spec, Spec::Remote(e) if e.network == "secret")));
    assert!(vxlan(&desired, "plain").is_some());
    let notes = model::overlay::notes(&checked.project, &view);
    assert!(
        notes
            .iter()
            .any(|n| n.contains("has no WireGuard tunnel: it is not built here")),
        "{notes:?}"
    );
}

fn quiet(_: Step<'_>) {}

#[tokio::test]
async fn the_input_rule_is_applied_and_read_back() {
    let (checked, view) = view(true);
    let desired = desired(&checked, &view);
    let k = Kernel::new("t", Fake::new());
    let observed = observe(&k, &[], &desired).await.unwrap();
    let changes = plan::diff(&observed, &desired);
    apply(&k, &observed, &desired, &changes, &quiet)
        .await
        .unwrap();
    let observed = observe(&k, &desired, &desired).await.unwrap();
    let left = plan::diff(&observed, &desired);
    assert!(left.is_empty(), "left over: {left:#?}");
}

#[test]
fn on_one_host_the_plan_says_nothing_crosses_a_wire() {
    let checked = load(COMPOSE).unwrap();
    let notes = model::overlay::single_host_notes(&checked.project);
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0].starts_with("network `secret` is encrypted: on one host (no --store) its traffic never leaves the machine"),
        "{notes:?}"
    );
    let desired = model::build(&checked.project, &Context::default())
        .unwrap()
        .resources;
    assert!(input_rules(&desired).is_empty());
}

fn refused(text: &str) -> String {
    let Err(Failure::Invalid { diags, .. }) = load(text) else {
        panic!("accepted: {text}")
    };
    format!("{:?}", diags.errors)
}

#[test]
fn validate_takes_encrypted_on_overlays_only_and_keeps_the_tunnel_range_free() {
    let bridge = COMPOSE.replace(
        "driver: overlay\n    driver_opts: {encrypted: \"\"}",
        "driver: bridge\n    driver_opts: {encrypted: \"true\"}",
    );
    let said = refused(&bridge);
    assert!(
        said.contains(
            "`encrypted` applies to overlay networks; network `secret` uses the bridge driver"
        ),
        "{said}"
    );
    let clash = COMPOSE.replace("10.61.0.0/24", "10.232.7.0/24");
    let said = refused(&clash);
    assert!(
        said.contains("subnet 10.232.7.0/24 of network `plain` overlaps 10.232.0.0/16"),
        "{said}"
    );
    // A local network of a cluster project too; a one-host project may use the range.
    let local = COMPOSE.replace(
        "  plain:\n    driver: overlay\n    ipam: {config: [{subnet: 10.61.0.0/24}]}",
        "  plain:\n    ipam: {config: [{subnet: 10.232.7.0/24}]}",
    );
    let said = refused(&local);
    assert!(
        said.contains("subnet 10.232.7.0/24 of network `plain` overlaps 10.232.0.0/16"),
        "{said}"
    );
}

#[test]
fn a_project_without_an_overlay_may_use_the_tunnel_range() {
    let one_host = "name: t\nservices:\n  web:\n    networks: [n]\nnetworks:\n  n:\n    ipam: {config: [{subnet: 10.232.7.0/24}]}\n";
    assert!(load(one_host).is_ok());
}
