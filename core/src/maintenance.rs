//! Node maintenance: whether a node is being emptied (cordoned, or a maintenance taint), read from its spec.

/// The label Replace puts on a stopped backend pod under maintenance: the ring's budget does not
/// cover a pod with it, so the node drain's next eviction deletes that pod (and the drain, which
/// keeps evicting by name, never meets its successor; see `judge::evict_first`).
pub const RELEASED_LABEL: &str = "mailops.io/released";

/// How long Replace leaves a released pod to a node drain's eviction before deleting it itself:
/// `kubectl drain` (and kured, which uses its code) retries a refused eviction every 5 s.
pub const EVICTION_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// A taint on a node, as its spec has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

/// Why a node is under maintenance, or None. A node is under maintenance when it is cordoned
/// (`spec.unschedulable`: what `kubectl cordon` and `kubectl drain` set), or carries one of the
/// `watched` taint keys with the effect `NoSchedule` or `NoExecute` (what an upgrade tool puts on a
/// node it is about to empty). `PreferNoSchedule` does not keep pods off a node, so it empties
/// nothing; a taint not named is another tool's business (e.g. the node-lifecycle controller's
/// `node.kubernetes.io/unreachable`, whose pods are not moved by exec into them).
pub fn of_node(
    node: &str,
    unschedulable: bool,
    taints: &[Taint],
    watched: &[String],
) -> Option<String> {
    if unschedulable {
        return Some(format!("node {node} is cordoned"));
    }
    taints
        .iter()
        .find(|t| {
            matches!(t.effect.as_str(), "NoSchedule" | "NoExecute") && watched.contains(&t.key)
        })
        .map(|t| format!("node {node} has the taint {}:{}", t.key, t.effect))
}

/// The maintenance taint keys the operator is told to follow (`--maintenance-taints`, a comma
/// separated list): each must be a valid taint key (an optional DNS-subdomain prefix and `/`, then
/// a name of at most 63 characters of alphanumerics, `-`, `_` and `.`).
pub fn parse_taint_keys(list: &str) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    for k in list.split(',').map(str::trim).filter(|k| !k.is_empty()) {
        let (prefix, name) = match k.split_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, k),
        };
        let name_ok = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric());
        let prefix_ok = prefix.is_none_or(|p| {
            !p.is_empty()
                && p.len() <= 253
                && p.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                })
        });
        if !name_ok || !prefix_ok {
            return Err(format!("{k:?} is not a taint key"));
        }
        keys.push(k.to_string());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
        }
    }

    #[test]
    fn a_node_is_under_maintenance_when_cordoned_or_tainted_by_a_watched_key() {
        let watched = vec!["example.com/upgrade".to_string()];
        let t = [
            (false, vec![], None),
            (true, vec![], Some("node n1 is cordoned")),
            // cordoned wins: it is what kubectl drain sets
            (
                true,
                vec![taint("example.com/upgrade", "NoSchedule")],
                Some("node n1 is cordoned"),
            ),
            (
                false,
                vec![taint("example.com/upgrade", "NoSchedule")],
                Some("node n1 has the taint example.com/upgrade:NoSchedule"),
            ),
            (
                false,
                vec![taint("example.com/upgrade", "NoExecute")],
                Some("node n1 has the taint example.com/upgrade:NoExecute"),
            ),
            // a preference empties nothing
            (
                false,
                vec![taint("example.com/upgrade", "PreferNoSchedule")],
                None,
            ),
            // another tool's taint is not ours to act on
            (
                false,
                vec![taint("node.kubernetes.io/unreachable", "NoExecute")],
                None,
            ),
        ];
        for (cordoned, taints, want) in t {
            assert_eq!(
                of_node("n1", cordoned, &taints, &watched).as_deref(),
                want,
                "{cordoned} {taints:?}"
            );
        }
        // no key watched: only a cordon counts
        assert_eq!(
            of_node(
                "n1",
                false,
                &[taint("example.com/upgrade", "NoSchedule")],
                &[]
            ),
            None
        );
    }

    #[test]
    fn taint_keys_are_parsed_and_bad_ones_refused() {
        let ok = [
            ("", vec![]),
            ("upgrade", vec!["upgrade"]),
            (
                "example.com/upgrade, kured.dev/reboot",
                vec!["example.com/upgrade", "kured.dev/reboot"],
            ),
            ("a,,b", vec!["a", "b"]),
        ];
        for (input, want) in ok {
            assert_eq!(parse_taint_keys(input).unwrap(), want, "{input}");
        }
        for bad in [
            "-x",
            "x/",
            "/x",
            "Ex.com/x",
            "a b",
            &"x".repeat(64),
            "ex_ample.com/x",
        ] {
            assert!(parse_taint_keys(bad).is_err(), "{bad}");
        }
    }
}
