//! `netcompose config`: the normalized project, with interpolation, merging and defaults applied,
//! in the shape `docker compose config` prints (plus the extension keys).

use super::Format;
use crate::spec::{self, Project};
use indexmap::IndexMap;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Serialize)]
struct View<'a> {
    name: &'a str,
    services: IndexMap<&'a str, ServiceView<'a>>,
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    networks: IndexMap<&'a str, NetworkView<'a>>,
    #[serde(rename = "x-checks", skip_serializing_if = "<[_]>::is_empty")]
    checks: &'a [spec::Check],
    #[serde(rename = "x-metrics", skip_serializing_if = "Option::is_none")]
    metrics: Option<MetricsView>,
}

/// `x-metrics`, so that a printed configuration loads back with it.
#[derive(Serialize)]
struct MetricsView {
    listen: String,
}

#[derive(Serialize)]
struct NetworkView<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    driver: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    driver_opts: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    external: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    internal: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    attachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    enable_ipv4: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    enable_ipv6: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipam: Option<IpamView<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
    #[serde(rename = "x-policy", skip_serializing_if = "Option::is_none")]
    policy: Option<&'a spec::Policy>,
}

#[derive(Serialize)]
struct IpamView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    driver: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    config: Vec<BTreeMap<&'static str, serde_json::Value>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    options: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct ServiceView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    network_mode: Option<String>,
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    networks: IndexMap<&'a str, Option<BTreeMap<&'static str, serde_json::Value>>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ports: Vec<PortView>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    expose: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dns: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dns_search: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dns_opt: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    extra_hosts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    domainname: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mac_address: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container_name: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    depends_on: BTreeMap<&'a str, DependsOnView>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    links: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    sysctls: BTreeMap<&'a str, &'a str>,
    deploy: DeployView,
    #[serde(rename = "x-policy", skip_serializing_if = "Option::is_none")]
    policy: Option<&'a spec::Policy>,
    #[serde(rename = "x-run", skip_serializing_if = "Option::is_none")]
    run: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    healthcheck: Option<HealthcheckView>,
    #[serde(rename = "x-qos", skip_serializing_if = "Option::is_none")]
    qos: Option<serde_json::Value>,
}

/// `healthcheck` with Compose's defaults filled in; a `CMD-SHELL` test shows as the `CMD` it
/// runs (`/bin/sh -c ...`), which loads back the same.
#[derive(Serialize)]
struct HealthcheckView {
    test: Vec<String>,
    interval: String,
    timeout: String,
    retries: u32,
    start_period: String,
    start_interval: String,
}

/// `depends_on` in the long form, as `docker compose config` prints it.
#[derive(Serialize)]
struct DependsOnView {
    condition: spec::Condition,
    required: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    restart: bool,
}

#[derive(Serialize)]
struct DeployView {
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<spec::DeployMode>,
    replicas: u32,
    endpoint_mode: spec::EndpointMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    placement: Option<PlacementView>,
}

/// `deploy.placement`, constraints in Swarm's spelling (`node.labels.zone==eu`).
#[derive(Serialize)]
struct PlacementView {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    constraints: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_replicas_per_node: Option<u32>,
}

#[derive(Serialize)]
struct PortView {
    target: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    published: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host_ip: Option<String>,
    protocol: spec::Protocol,
    mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_protocol: Option<String>,
}

pub fn render(project: &Project, format: Format) -> miette::Result<String> {
    let view = view(project);
    match format {
        Format::Json => serde_json::to_string_pretty(&view)
            .map(|s| s + "\n")
            .map_err(|e| miette::miette!("{e}")),
        Format::Yaml => serde_saphyr::to_string(&view).map_err(|e| miette::miette!("{e}")),
    }
}

fn view(project: &Project) -> View<'_> {
    View {
        name: &project.name,
        services: project
            .services
            .iter()
            .map(|(k, s)| (k.as_str(), service(s)))
            .collect(),
        networks: project
            .networks
            .iter()
            .map(|(k, n)| (k.as_str(), network(n)))
            .collect(),
        checks: &project.checks,
        metrics: project.metrics.as_ref().map(|m| MetricsView {
            listen: m.listen.value.to_string(),
        }),
    }
}

fn network(n: &spec::Network) -> NetworkView<'_> {
    let ipam = (!n.ipam.config.is_empty() || n.ipam.driver.is_some() || !n.ipam.options.is_empty())
        .then(|| IpamView {
            driver: n.ipam.driver.as_ref().map(|d| d.value.clone()),
            config: n.ipam.config.iter().map(pool).collect(),
            options: &n.ipam.options,
        });
    NetworkView {
        name: &n.name.value,
        driver: n.external.is_none().then(|| n.driver_name()),
        driver_opts: n
            .driver_opts
            .iter()
            .map(|(k, v)| (k.as_str(), v.value.as_str()))
            .collect(),
        external: n.external.is_some(),
        internal: n.internal,
        attachable: n.attachable,
        enable_ipv4: n.enable_ipv4,
        enable_ipv6: n.enable_ipv6.as_ref().map(|e| e.value),
        ipam,
        labels: &n.labels,
        policy: n.policy.as_ref(),
    }
}

fn pool(c: &spec::IpamConfig) -> BTreeMap<&'static str, serde_json::Value> {
    let mut m = BTreeMap::new();
    let s = |v: &dyn ToString| serde_json::Value::String(v.to_string());
    if let Some(v) = &c.subnet {
        m.insert("subnet", s(&v.value));
    }
    if let Some(v) = &c.ip_range {
        m.insert("ip_range", s(&v.value));
    }
    if let Some(v) = &c.gateway {
        m.insert("gateway", s(&v.value));
    }
    if !c.aux_addresses.is_empty() {
        m.insert(
            "aux_addresses",
            c.aux_addresses
                .iter()
                .map(|(k, v)| (k.clone(), s(&v.value)))
                .collect(),
        );
    }
    m
}

fn service(s: &spec::Service) -> ServiceView<'_> {
    ServiceView {
        network_mode: s.network_mode.as_ref().map(|m| mode(&m.value)),
        // A `network_mode` service's networks are implied by the mode, as Compose prints it.
        networks: s
            .networks
            .iter()
            .filter(|_| s.network_mode.is_none())
            .map(|(k, a)| (k.as_str(), attachment(a)))
            .collect(),
        ports: s.ports.iter().flat_map(port).collect(),
        expose: s.expose.iter().map(|e| e.value.to_string()).collect(),
        dns: strs(&s.dns),
        dns_search: strs(&s.dns_search),
        dns_opt: strs(&s.dns_opt),
        extra_hosts: s
            .extra_hosts
            .iter()
            .map(|h| format!("{}={}", h.host, h.addr))
            .collect(),
        hostname: s.hostname.as_ref().map(|h| h.value.as_str()),
        domainname: s.domainname.as_ref().map(|h| h.value.as_str()),
        mac_address: s.mac_address.as_ref().map(|h| h.value.as_str()),
        container_name: s.container_name.as_ref().map(|h| h.value.as_str()),
        depends_on: s
            .depends_on
            .iter()
            .map(|d| {
                let view = DependsOnView {
                    condition: d.condition.value,
                    required: d.required,
                    restart: d.restart,
                };
                (d.service.value.as_str(), view)
            })
            .collect(),
        links: s
            .links
            .iter()
            .map(|l| match &l.alias {
                Some(alias) => format!("{}:{alias}", l.service.value),
                None => l.service.value.clone(),
            })
            .collect(),
        sysctls: s
            .sysctls
            .iter()
            .map(|(k, v)| (k.as_str(), v.value.as_str()))
            .collect(),
        deploy: DeployView {
            mode: s.deploy.mode.as_ref().map(|m| m.value),
            replicas: s.replicas(),
            endpoint_mode: s
                .deploy
                .endpoint_mode
                .as_ref()
                .map_or_else(Default::default, |m| m.value),
            placement: placement_view(&s.deploy.placement),
        },
        policy: s.policy.as_ref(),
        run: s.run.as_ref().map(|r| r.value.as_slice()),
        qos: s.qos.as_ref().map(qos),
        healthcheck: s.healthcheck.as_ref().map(|h| HealthcheckView {
            test: std::iter::once("CMD".to_string())
                .chain(h.value.argv.iter().cloned())
                .collect(),
            interval: duration(h.value.interval),
            timeout: duration(h.value.timeout),
            retries: h.value.retries,
            start_period: duration(h.value.start_period),
            start_interval: duration(h.value.start_interval),
        }),
    }
}

fn placement_view(p: &spec::Placement) -> Option<PlacementView> {
    let view = PlacementView {
        constraints: p.constraints.iter().map(|c| c.value.to_string()).collect(),
        max_replicas_per_node: p.max_replicas_per_node.as_ref().map(|m| m.value),
    };
    (!view.constraints.is_empty() || view.max_replicas_per_node.is_some()).then_some(view)
}

/// A duration in Compose's (Go's) syntax, exact: `10s`, else `1500ms`, else nanoseconds.
fn duration(d: std::time::Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos() % 1_000_000 == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}ns", d.as_nanos())
    }
}

/// `x-qos` in the units it is read in (rates in bits, sizes in bytes), so that it loads back.
fn qos(q: &spec::Qos) -> serde_json::Value {
    use spec::units::{format_rate, format_size};
    let shape = |s: &spec::Shape| {
        let mut m = serde_json::Map::new();
        m.insert("rate".into(), format_rate(s.rate.value).into());
        if let Some(c) = &s.ceil {
            m.insert("ceil".into(), format_rate(c.value).into());
        }
        if let Some(b) = &s.burst {
            m.insert("burst".into(), format_size(b.value).into());
        }
        serde_json::Value::Object(m)
    };
    let mut m = serde_json::Map::new();
    if let Some(e) = &q.egress {
        m.insert("egress".into(), shape(e));
    }
    if let Some(i) = &q.ingress {
        m.insert("ingress".into(), shape(i));
    }
    if let Some(l) = &q.loss {
        m.insert("loss".into(), format!("{}%", l.value).into());
    }
    if let Some(d) = &q.delay {
        m.insert("delay".into(), qos_duration(d.value).into());
    }
    if let Some(j) = &q.jitter {
        m.insert("jitter".into(), qos_duration(j.value).into());
    }
    serde_json::Value::Object(m)
}

/// A delay to the microsecond, which is what netem keeps.
fn qos_duration(d: std::time::Duration) -> String {
    if d.subsec_nanos() % 1_000_000 == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    }
}

fn strs(v: &[spec::Spanned<String>]) -> Vec<&str> {
    v.iter().map(|x| x.value.as_str()).collect()
}

fn mode(m: &spec::NetworkMode) -> String {
    match m {
        spec::NetworkMode::None => "none".into(),
        spec::NetworkMode::Host => "host".into(),
        spec::NetworkMode::Bridge => "bridge".into(),
        spec::NetworkMode::Service(s) => format!("service:{s}"),
        spec::NetworkMode::Container(c) => format!("container:{c}"),
    }
}

fn attachment(a: &spec::Attachment) -> Option<BTreeMap<&'static str, serde_json::Value>> {
    use serde_json::json;
    let mut m = BTreeMap::new();
    if !a.aliases.is_empty() {
        m.insert(
            "aliases",
            json!(a.aliases.iter().map(|x| &x.value).collect::<Vec<_>>()),
        );
    }
    if let Some(v) = &a.ipv4_address {
        m.insert("ipv4_address", json!(v.value.to_string()));
    }
    if let Some(v) = &a.ipv6_address {
        m.insert("ipv6_address", json!(v.value.to_string()));
    }
    if !a.link_local_ips.is_empty() {
        m.insert(
            "link_local_ips",
            json!(a
                .link_local_ips
                .iter()
                .map(|x| x.value.to_string())
                .collect::<Vec<_>>()),
        );
    }
    if let Some(v) = &a.mac_address {
        m.insert("mac_address", json!(v.value));
    }
    if !a.driver_opts.is_empty() {
        m.insert("driver_opts", json!(a.driver_opts));
    }
    if let Some(v) = &a.interface_name {
        m.insert("interface_name", json!(v.value));
    }
    if a.priority != 0 {
        m.insert("priority", json!(a.priority));
    }
    if a.gw_priority != 0 {
        m.insert("gw_priority", json!(a.gw_priority));
    }
    if let Some(q) = &a.qos {
        m.insert("x-qos", qos(q));
    }
    (!m.is_empty()).then_some(m)
}

/// One entry per target port, as Compose prints ranges (`8080-8081` is two entries, and
/// `9000-9001:80-81` maps port for port; a host range for one target stays a range).
fn port(p: &spec::Port) -> Vec<PortView> {
    (p.target.start..=p.target.end)
        .enumerate()
        .map(|(i, target)| PortView {
            target,
            published: p.published.map(|r| {
                let offset = u16::try_from(i).unwrap_or(u16::MAX);
                match r.start.checked_add(offset).filter(|h| *h <= r.end) {
                    Some(h) if p.target.len() > 1 => h.to_string(),
                    Some(_) | None => r.to_string(),
                }
            }),
            host_ip: p.host_ip.map(|i| i.to_string()),
            protocol: p.protocol,
            mode: p.mode.clone(),
            name: p.name.clone(),
            app_protocol: p.app_protocol.clone(),
        })
        .collect()
}
