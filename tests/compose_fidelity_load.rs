//! Issue 15, items 1, 2 and 7: several -f files merge, variables and the environment are read,
//! and `config` prints what was read, as Docker Compose does. Each case comes from a test of
//! compose-go or docker/compose, named in its fixture (tests/fixtures/compose_fidelity/) and
//! here. Pure loading: no root needed.

use netcompose::load::{load, LoadOptions, Loaded};
use netcompose::spec::Service;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/compose_fidelity")
        .join(name)
}

/// Load `files` of a fixture with exactly `env` as the environment (nothing of the shell).
fn load_with(
    dir: &str,
    files: &[&str],
    env: &[(&str, &str)],
    tweak: impl FnOnce(&mut LoadOptions),
) -> Loaded {
    let dir = fixture(dir);
    let mut opts = LoadOptions {
        files: files.iter().map(|f| dir.join(f)).collect(),
        environment: Some(
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    };
    tweak(&mut opts);
    let loaded = load(&opts).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !loaded.diags.has_errors(),
        "{}",
        netcompose::pipeline::render_plain(&loaded.diags, &loaded.sources)
    );
    loaded
}

fn strings(v: &[netcompose::spec::Spanned<String>]) -> Vec<&str> {
    v.iter().map(|s| s.value.as_str()).collect()
}

fn keys<V>(m: &netcompose::spec::Keyed<V>) -> Vec<&str> {
    m.keys().map(String::as_str).collect()
}

/// Run the binary in `dir` with `env` only, expecting success; its stdout as JSON.
fn config_json(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_netcompose"))
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .args(["config", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

// ---- item 1: merging several -f files ----------------------------------------------------

/// compose-go override/merge_networks_test.go: Test_mergeYamlServiceNetworksMapping and
/// Test_mergeYamlServiceNetworkSequence.
#[test]
fn service_networks_merge_with_their_aliases_and_link_local_ips() {
    let l = load_with(
        "merge-networks",
        &["compose.yaml", "override.yaml"],
        &[],
        |_| {},
    );
    let test = &l.project.services["test"];
    assert_eq!(keys(&test.networks), ["network1", "network2"]);
    let n1 = &test.networks["network1"];
    assert_eq!(strings(&n1.aliases), ["alias1", "alias2", "alias3"]);
    let ips: Vec<String> = n1
        .link_local_ips
        .iter()
        .map(|i| i.value.to_string())
        .collect();
    assert_eq!(ips, ["57.123.22.11", "57.123.22.13", "57.123.22.12"]);
    assert_eq!(
        strings(&test.networks["network2"].aliases),
        ["alias1", "alias3"]
    );
    // A list in both files: merged, not replaced.
    assert_eq!(
        keys(&l.project.services["seq"].networks),
        ["front-network", "back-network", "third-network"]
    );
}

/// compose-go override/merge_networks_test.go: Test_mergeYamlNetworks.
#[test]
fn ipam_config_merges_per_subnet_with_aux_addresses() {
    let l = load_with(
        "merge-ipam",
        &["compose.yaml", "override.yaml"],
        &[],
        |_| {},
    );
    let net = &l.project.networks["network1"];
    let pools: Vec<Value> = net
        .ipam
        .config
        .iter()
        .map(|c| {
            json!({
                "subnet": c.subnet.as_ref().unwrap().value.to_string(),
                "ip_range": c.ip_range.as_ref().unwrap().value.to_string(),
                "gateway": c.gateway.as_ref().unwrap().value.to_string(),
                "aux": c.aux_addresses.iter()
                    .map(|(k, v)| (k.clone(), json!(v.value.to_string())))
                    .collect::<serde_json::Map<_, _>>(),
            })
        })
        .collect();
    assert_eq!(
        pools,
        [
            json!({"subnet": "172.28.0.0/16", "ip_range": "172.28.5.1/24",
                   "gateway": "172.28.5.254",
                   "aux": {"host1": "172.28.1.5", "host2": "172.28.1.4",
                           "host3": "172.28.1.7", "host4": "172.28.1.10"}}),
            json!({"subnet": "172.28.10.0/16", "ip_range": "172.28.10.1/24",
                   "gateway": "172.28.10.254",
                   "aux": {"host1": "172.28.10.5", "host2": "172.28.10.4",
                           "host3": "172.28.10.10"}}),
        ]
    );
    let options: Vec<(&str, &str)> = net
        .ipam
        .options
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(options, [("bar", "foo"), ("baz", "0"), ("foo", "bar")]);
    assert_eq!(net.labels.len(), 4);
    assert_eq!(net.labels["com.example.department"], "Finance");
    assert_eq!(net.labels["com.example.department-new"], "New");
    assert!(l.project.networks.contains_key("network2"));
}

/// compose-go override/merge_dns_test.go: Test_mergeYamlDNSMixed, and
/// override/merge_sysctls_test.go: TestMergeSysctlsMixed and TestMergeSysctlsSequence.
#[test]
fn dns_and_sysctls_merge_across_string_list_and_map_forms() {
    let l = load_with(
        "merge-dns-sysctls",
        &["compose.yaml", "override.yaml"],
        &[],
        |_| {},
    );
    let test: &Service = &l.project.services["test"];
    assert_eq!(strings(&test.dns), ["8.8.8.8", "10.10.10.10", "9.9.9.9"]);
    assert_eq!(strings(&test.dns_opt), ["use-vc", "no-tld-query"]);
    assert_eq!(
        strings(&test.dns_search),
        ["dc1.example.com", "dc2.example.com"]
    );
    for svc in ["test", "lists"] {
        let sysctls: Vec<(&str, &str)> = l.project.services[svc]
            .sysctls
            .iter()
            .map(|(k, v)| (k.as_str(), v.value.as_str()))
            .collect();
        assert_eq!(
            sysctls,
            [
                ("net.ipv4.tcp_keepalive_time", "300"),
                ("net.ipv6.conf.all.disable_ipv6", "1")
            ],
            "{svc}"
        );
    }
}

/// compose-go loader/reset_test.go: TestResetRemove, TestOverrideReplace; and
/// loader/merge_reset_test.go: Test_LoadWithReset.
#[test]
fn reset_and_override_tags_work_on_any_key() {
    let l = load_with(
        "reset-override",
        &["compose.yaml", "override.yaml"],
        &[],
        |_| {},
    );
    assert!(!l.project.networks.contains_key("test"));
    let replaced = &l.project.networks["replaced"];
    assert!(replaced.external.is_none());
    assert_eq!(replaced.name.value, "test-reset_replaced");
    let front = &l.project.networks["front"];
    let subnets: Vec<String> = front
        .ipam
        .config
        .iter()
        .map(|c| c.subnet.as_ref().unwrap().value.to_string())
        .collect();
    assert_eq!(subnets, ["10.2.0.0/24"]);
    let foo = &l.project.services["foo"];
    assert!(foo.dns.is_empty());
    assert_eq!(
        foo.sysctls.keys().collect::<Vec<_>>(),
        ["net.core.somaxconn"]
    );
    assert_eq!(strings(&foo.networks["front"].aliases), ["a2"]);
}

// ---- item 2: interpolation and the environment -------------------------------------------

/// compose-go cli/options_test.go: TestEnvVariablePrecedence.
#[test]
fn dotenv_variables_resolve_against_the_shell_first() {
    let hostname = |env: &[(&str, &str)]| {
        let l = load_with("env-precedence", &["compose.yaml"], env, |_| {});
        l.project.services["web"].hostname.clone().unwrap().value
    };
    assert_eq!(hostname(&[]), "foo-foo");
    assert_eq!(hostname(&[("FOO", "zot")]), "zot-zot");
}

/// compose-go loader/loader_test.go: TestProjectNameInterpolation (its three cases) and
/// TestLoadProjectName (the name from the environment).
#[test]
fn compose_project_name_is_set_for_interpolation() {
    let container = |l: &Loaded, svc: &str| {
        l.project.services[svc]
            .container_name
            .clone()
            .unwrap()
            .value
    };
    let l = load_with("project-name", &["compose.yaml"], &[], |_| {});
    assert_eq!(l.project.name, "interpolated");
    assert_eq!(container(&l, "web"), "interpolated-web");

    let l = load_with(
        "project-name",
        &["compose.yaml", "second.yaml", "third.yaml"],
        &[],
        |_| {},
    );
    assert_eq!(l.project.name, "overrided");
    for svc in ["web", "db", "proxy"] {
        assert_eq!(container(&l, svc), format!("overrided-{svc}"));
    }

    let l = load_with("project-name", &["compose.yaml"], &[], |o| {
        o.project_name = Some("another".into())
    });
    assert_eq!(container(&l, "web"), "another-web");

    // -p wins over COMPOSE_PROJECT_NAME, in the name and in interpolation alike.
    let l = load_with(
        "project-name",
        &["self.yaml"],
        &[("COMPOSE_PROJECT_NAME", "fromenv")],
        |o| o.project_name = Some("lab".into()),
    );
    assert_eq!(l.project.name, "lab");
    assert_eq!(
        l.project.services["web"].hostname.clone().unwrap().value,
        "lab-web"
    );
    let l = load_with(
        "project-name",
        &["self.yaml"],
        &[("COMPOSE_PROJECT_NAME", "fromenv")],
        |_| {},
    );
    assert_eq!(l.project.name, "fromenv");
    assert_eq!(
        l.project.services["web"].hostname.clone().unwrap().value,
        "fromenv-web"
    );
}

/// compose-go loader/loader.go NormalizeProjectName for a `name:` of the file, and
/// cli/options_test.go TestProjectName ("by name empty": `-p ''` is the directory's name;
/// "by name start with invalid char": -p and COMPOSE_PROJECT_NAME are not normalized).
#[test]
fn project_names_are_normalized_or_refused_as_compose_does() {
    let l = load_with("project-name", &["upper.yaml"], &[], |_| {});
    assert_eq!(l.project.name, "myproject");
    let l = load_with("simple", &["compose.yaml"], &[], |o| {
        o.project_name = Some(String::new())
    });
    assert_eq!(l.project.name, "simple");
    // `name: ${COMPOSE_PROJECT_NAME}-web` with no name from elsewhere: compose-go interpolates
    // it without the variable and normalizes `-web`.
    let l = load_with("project-name", &["self.yaml"], &[], |_| {});
    assert_eq!(l.project.name, "web");

    for (p, env) in [(Some("-my_project"), None), (None, Some("-my_project"))] {
        let dir = fixture("simple");
        let opts = LoadOptions {
            files: vec![dir.join("compose.yaml")],
            project_name: p.map(String::from),
            environment: Some(
                env.map(|e| ("COMPOSE_PROJECT_NAME".to_string(), e.to_string()))
                    .into_iter()
                    .collect(),
            ),
            ..Default::default()
        };
        match load(&opts) {
            Err(netcompose::load::LoadError::ProjectName { name, .. }) => {
                assert_eq!(name, "-my_project")
            }
            other => panic!("{other:?}"),
        }
    }
    // The binary: `-p ''` is not an error.
    let out = config_json(&fixture("simple"), &["-p", ""], &[]);
    assert_eq!(out["name"], "simple");
}

/// docker/compose pkg/e2e/compose_test.go: TestComposeFileSetByDotEnv (the .env of the
/// current directory names the file through COMPOSE_FILE and enables a profile; the .env next
/// to that file supplies IMAGE_TAG).
#[test]
fn compose_file_and_profiles_come_from_dotenv() {
    let out = config_json(&fixture("dotenv-compose-file"), &[], &[]);
    assert_eq!(out["name"], "development");
    assert_eq!(out["services"]["backend"]["hostname"], "test-latest");
    assert!(out["services"]["test"].is_object(), "{out}");
    // The shell wins over .env for COMPOSE_FILE's default too.
    let out = config_json(
        &fixture("dotenv-compose-file"),
        &[],
        &[
            ("COMPOSE_FILE", "development/compose.yaml"),
            ("IMAGE_TAG", "v2"),
        ],
    );
    assert_eq!(out["services"]["backend"]["hostname"], "test-v2");
}

/// compose-go cli/options.go WithConfigFileEnv: COMPOSE_FILE is split on
/// COMPOSE_PATH_SEPARATOR, and the files merge in that order.
#[test]
fn compose_file_honours_its_path_separator() {
    let out = config_json(&fixture("path-separator"), &[], &[]);
    assert_eq!(out["name"], "separated");
    assert_eq!(
        out["services"]["web"]["networks"],
        json!({"front": null, "back": null})
    );
}

/// compose-go loader/tests/profiles_test.go: TestProfiles; types/project.go HasProfile (`*`);
/// docker/compose pkg/e2e/profiles_test.go (COMPOSE_PROFILES from the project's .env, which
/// --profile replaces, as cli/options.go WithDefaultProfiles has it).
#[test]
fn profiles_from_dotenv_flags_and_star() {
    let services = |profiles: &[&str], env: &[(&str, &str)]| {
        let l = load_with("profiles", &["compose.yaml"], env, |o| {
            o.profiles = profiles.iter().map(|p| p.to_string()).collect()
        });
        keys(&l.project.services)
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(services(&[], &[]), ["foo", "bar"]);
    assert_eq!(
        services(&[], &[("COMPOSE_PROFILES", "other")]),
        ["bar", "other"]
    );
    assert_eq!(services(&["dev"], &[]), ["foo", "bar"]);
    assert_eq!(services(&["other"], &[]), ["bar", "other"]);
    assert_eq!(services(&["*"], &[]), ["foo", "bar", "other"]);
}

/// compose-go loader/tests/dns_test.go: TestDNSOmitEmpty.
#[test]
fn values_that_interpolate_to_empty_are_dropped() {
    let l = load_with("omit-empty", &["compose.yaml"], &[], |_| {});
    let foo = &l.project.services["foo"];
    assert!(foo.dns.is_empty());
    assert_eq!(strings(&foo.dns_search), ["example.com"]);
    assert!(foo.hostname.is_none());
    assert_eq!(
        foo.exec.environment,
        [("EMPTY".to_string(), Some(String::new()))]
    );
    assert_eq!(foo.run.as_ref().unwrap().value, ["echo", ""]);
    assert!(l.diags.warnings.iter().any(|w| w.contains("UNSET_VAR")));
}

// ---- item 7: config prints every networking key read ------------------------------------

/// compose-go loader/tests: TestLinks, TestNetworkIPAM, TestServiceNetworkDriverOpts,
/// TestLinkLocalIPs and TestContainerName, through `netcompose config`.
#[test]
fn config_prints_links_ipam_options_driver_opts_and_link_local_ips() {
    let dir = fixture("config-output");
    let out = config_json(&dir, &["-f", "compose.yaml"], &[]);
    let foo = &out["services"]["foo"];
    assert_eq!(foo["links"], json!(["db", "db:database", "redis"]));
    assert_eq!(out["services"]["db"]["container_name"], "my-db");
    assert_eq!(
        foo["networks"]["net1"],
        json!({
            "driver_opts": {"com.docker.network.endpoint.sysctls": "ipv6.conf.accept_ra=0"},
            "link_local_ips": ["fe80::1:95ff:fe20:100"],
        })
    );
    assert_eq!(
        out["networks"]["net1"]["ipam"],
        json!({
            "driver": "default",
            "config": [{"subnet": "172.28.0.0/16", "gateway": "172.28.0.1"}],
            "options": {"com.docker.network.ipam.baz": "1", "com.docker.network.ipam.foo": "bar"},
        })
    );
}

/// compose-go cli/options.go WithDefaultConfigPath (DefaultOverrideFileNames): compose.yaml
/// and then compose.override.yaml, when no file is named.
#[test]
fn the_default_override_file_is_merged() {
    let out = config_json(&fixture("default-override"), &[], &[]);
    assert_eq!(out["services"]["web"]["dns"], json!(["10.0.0.53"]));
    let out = config_json(&fixture("default-override"), &["-f", "compose.yaml"], &[]);
    assert!(out["services"]["web"].get("dns").is_none(), "{out}");
}

/// compose-go cli/options_test.go TestProjectName: a name that normalizes to nothing is an
/// error ("project name must not be empty"); here a diagnostic at the key, with a hint, and
/// nothing is done.
#[test]
fn a_name_that_normalizes_to_nothing_is_located() {
    let out = Command::new(env!("CARGO_BIN_EXE_netcompose"))
        .current_dir(fixture("project-name"))
        .env_clear()
        .args(["-f", "empty.yaml", "validate"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("empty.yaml:3:7"), "{stderr}");
    assert!(stderr.contains("pass -p NAME"), "{stderr}");
}
