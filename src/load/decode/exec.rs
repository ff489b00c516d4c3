//! The keys of a service that shape its `x-run` process: `user`, `working_dir`, `environment`,
//! `security_opt`, `cap_add`, `cap_drop`. Names are resolved later (see [`resolve_user`]), once
//! the loader has read the host's account files.

use super::Decoder;
use crate::diag::{ConfigError, Diagnostics};
use crate::load::interpolate::Vars;
use crate::load::node::Node;
use crate::spec::{CapChanges, Exec, Ids, Project, ALL_CAPS, CAPABILITIES};

pub(super) fn decode(d: &mut Decoder, node: &Node) -> Exec {
    let mut exec = Exec {
        user: d.opt_string(node, "user"),
        ..Default::default()
    };
    if let Some(wd) = d.opt_string(node, "working_dir") {
        if wd.value.starts_with('/') {
            exec.working_dir = Some(wd);
        } else if let Some(n) = node.get("working_dir") {
            d.invalid(
                "working_dir",
                n,
                "not an absolute path",
                "write the directory from the root, e.g. `/srv/app`",
            );
        }
    }
    exec.environment = d
        .dict(node.get("environment"), "environment", '=')
        .into_iter()
        .map(|(k, v)| (k.value, v.map(|v| v.value)))
        .collect();
    for opt in d.strings(node.get("security_opt"), "security_opt") {
        let v = opt.value.trim();
        if v == "no-new-privileges"
            || v == "no-new-privileges:true"
            || v == "no-new-privileges=true"
        {
            exec.no_new_privileges = true;
        }
    }
    let add = caps(d, node.get("cap_add"), "cap_add");
    let drop = caps(d, node.get("cap_drop"), "cap_drop");
    if add.is_some() || drop.is_some() {
        exec.caps = Some(CapChanges {
            add: add.unwrap_or(0),
            drop: drop.unwrap_or(0),
        });
    }
    exec
}

/// A capability list as a mask; None when the key is absent.
fn caps(d: &mut Decoder, node: Option<&Node>, key: &str) -> Option<u64> {
    let node = node.filter(|n| !n.is_null())?;
    let mut mask = 0;
    let items: Vec<&Node> = match node.as_seq() {
        Some(items) => items.iter().collect(),
        None => vec![node],
    };
    for item in items {
        let Some(name) = d.string(item, key) else {
            continue;
        };
        match capability(&name.value) {
            Some(bits) => mask |= bits,
            None => d.invalid(
                key,
                item,
                "unknown capability",
                "use a name such as NET_ADMIN or CAP_NET_RAW, or ALL",
            ),
        }
    }
    Some(mask)
}

/// `NET_ADMIN`, `CAP_NET_ADMIN` (any case) or `ALL` as a mask.
pub fn capability(name: &str) -> Option<u64> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if bare == "ALL" {
        return Some(ALL_CAPS);
    }
    CAPABILITIES
        .iter()
        .position(|c| *c == bare)
        .map(|i| 1u64 << i)
}

/// Fill what the decoder could not know: bare `environment` keys from `vars` (the loader's
/// environment) and `user` from the texts of /etc/passwd and /etc/group.
pub fn resolve_exec(
    project: &mut Project,
    vars: &Vars,
    passwd: &str,
    group: &str,
    diags: &mut Diagnostics,
) {
    for svc in project.services.values_mut() {
        for (key, value) in &mut svc.exec.environment {
            if value.is_none() {
                *value = vars.get(key.as_str()).cloned();
            }
        }
        let Some(user) = &svc.exec.user else {
            continue;
        };
        match resolve_user(&user.value, passwd, group) {
            Ok(ids) => svc.exec.ids = Some(ids),
            Err(e) => diags.push(ConfigError::InvalidValue {
                what: "user".into(),
                value: user.value.clone(),
                reason: e.to_string(),
                hint: "name a user of this host, or give numeric ids as `uid:gid`".into(),
                at: user.span,
            }),
        }
    }
}

/// Why `user` could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("no user `{0}` in /etc/passwd")]
    UnknownUser(String),
    #[error("no group `{0}` in /etc/group")]
    UnknownGroup(String),
    #[error("empty user name")]
    Empty,
}

/// Resolve `name`, `uid`, `uid:gid` or `name:group` against the texts of /etc/passwd and
/// /etc/group. Without a group, the user's own (a numeric uid unknown to passwd gets group 0,
/// as Docker does).
pub fn resolve_user(spec: &str, passwd: &str, group: &str) -> Result<Ids, UserError> {
    let (user, grp) = match spec.trim().split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec.trim(), None),
    };
    if user.is_empty() {
        return Err(UserError::Empty);
    }
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .find(|f| match user.parse::<u32>() {
            Ok(uid) => f[2].parse() == Ok(uid),
            Err(_) => f[0] == user,
        });
    let uid = match (user.parse::<u32>(), &entry) {
        (Ok(uid), _) => uid,
        (Err(_), Some(f)) => f[2]
            .parse()
            .map_err(|_| UserError::UnknownUser(user.into()))?,
        (Err(_), None) => return Err(UserError::UnknownUser(user.into())),
    };
    let gid = match grp {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| UserError::UnknownGroup(g.into()))?,
        },
        None => entry.and_then(|f| f[3].parse().ok()).unwrap_or(0),
    };
    Ok(Ids { uid, gid })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534::/:/bin/false\nweb:x:1001:1002::/srv:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nnogroup:x:65534:\nwww:x:33:web\n";

    #[test]
    fn users() {
        let ids = |uid, gid| Ok(Ids { uid, gid });
        assert_eq!(resolve_user("web", PASSWD, GROUP), ids(1001, 1002));
        assert_eq!(resolve_user("1001", PASSWD, GROUP), ids(1001, 1002));
        assert_eq!(resolve_user("4242", PASSWD, GROUP), ids(4242, 0));
        assert_eq!(
            resolve_user("65534:65534", PASSWD, GROUP),
            ids(65534, 65534)
        );
        assert_eq!(resolve_user("web:www", PASSWD, GROUP), ids(1001, 33));
        assert_eq!(resolve_user("nobody:7", PASSWD, GROUP), ids(65534, 7));
        assert_eq!(
            resolve_user("ghost", PASSWD, GROUP),
            Err(UserError::UnknownUser("ghost".into()))
        );
        assert_eq!(
            resolve_user("web:ghosts", PASSWD, GROUP),
            Err(UserError::UnknownGroup("ghosts".into()))
        );
        assert_eq!(resolve_user(":1", PASSWD, GROUP), Err(UserError::Empty));
    }

    fn load(yaml: &str) -> crate::load::Loaded {
        super::super::load_for_test(yaml, &[("FROM_SHELL", "s")])
    }

    #[test]
    fn service_keys() {
        let loaded = load(
            "services:\n  a:\n    user: \"7:8\"\n    working_dir: /srv\n    \
             environment: [X=1, FROM_SHELL, UNSET]\n    \
             security_opt: [\"no-new-privileges:true\"]\n    cap_drop: [ALL]\n    \
             cap_add: [cap_net_admin]\n  b: {}\n",
        );
        assert!(!loaded.diags.has_errors(), "{:?}", loaded.diags);
        let a = &loaded.project.services["a"].exec;
        assert_eq!(a.ids, Some(Ids { uid: 7, gid: 8 }));
        assert_eq!(a.working_dir.as_ref().unwrap().value, "/srv");
        assert_eq!(
            a.environment,
            [
                ("X".into(), Some("1".into())),
                ("FROM_SHELL".into(), Some("s".into())),
                ("UNSET".into(), None)
            ]
        );
        assert!(a.no_new_privileges);
        assert_eq!(a.caps.unwrap().kept(), 1 << 12);
        let b = &loaded.project.services["b"].exec;
        assert!(b.ids.is_none() && b.caps.is_none() && !b.no_new_privileges);
    }

    #[test]
    fn bad_service_keys_are_diagnosed_at_the_key() {
        let loaded = load(
            "services:\n  a:\n    user: nosuchuser-xyz\n    working_dir: srv\n    \
             cap_add: [FLY]\n",
        );
        let what: Vec<String> = loaded
            .diags
            .errors
            .iter()
            .map(|e| match e {
                ConfigError::InvalidValue { what, value, .. } => format!("{what}={value}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(what.len(), 3, "{what:?}");
        for w in ["user=nosuchuser-xyz", "working_dir=srv", "cap_add=FLY"] {
            assert!(what.contains(&w.to_string()), "{what:?}");
        }
    }

    #[test]
    fn capabilities() {
        assert_eq!(capability("NET_ADMIN"), Some(1 << 12));
        assert_eq!(capability("cap_net_raw"), Some(1 << 13));
        assert_eq!(capability("ALL"), Some(ALL_CAPS));
        assert_eq!(capability("CHECKPOINT_RESTORE"), Some(1 << 40));
        assert_eq!(capability("FLY"), None);
    }
}
